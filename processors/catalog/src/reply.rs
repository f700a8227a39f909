//! Answers to the commands and queries: a `ProductReply`, keyed by product id.

use crate::content::Breach;
use d2c_proto::catalog::v1::{product_reply, Product, ProductReply};
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_runtime::Effects;

pub(crate) fn product(product: Product) -> ProductReply {
    ProductReply {
        result: Some(product_reply::Result::Product(product)),
    }
}

pub(crate) fn rejected(code: Code, field: &str, message: impl Into<String>) -> ProductReply {
    ProductReply {
        result: Some(product_reply::Result::Rejected(Rejection {
            code: code as i32,
            field: field.to_owned(),
            message: message.into(),
            ..Rejection::default()
        })),
    }
}

pub(crate) fn invalid(breach: Breach) -> ProductReply {
    rejected(Code::Invalid, &breach.field, breach.message)
}

pub(crate) fn not_found(product_id: &str) -> ProductReply {
    rejected(
        Code::NotFound,
        "product_id",
        format!("there is no product {product_id}"),
    )
}

pub(crate) fn send(effects: &mut Effects, product_id: &str, reply: &ProductReply) {
    effects.reply(product_id, reply);
}
