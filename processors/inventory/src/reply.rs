//! Answers to the admin commands and queries: a `StockReply`.

use crate::table::level;
use d2c_proto::common::v1::{rejection::Code, Rejection};
use d2c_proto::inventory::v1::{stock_reply, StockRecord, StockReply};

pub(crate) fn level_reply(record: &StockRecord) -> StockReply {
    StockReply {
        result: Some(stock_reply::Result::Level(level(record))),
    }
}

pub(crate) fn rejected(code: Code, field: &str, message: impl Into<String>) -> StockReply {
    StockReply {
        result: Some(stock_reply::Result::Rejected(Rejection {
            code: code as i32,
            field: field.to_owned(),
            message: message.into(),
            ..Rejection::default()
        })),
    }
}

/// The SKU check of the admin commands, as a rejection naming `sku`.
pub(crate) fn check_sku(sku: &str) -> Result<(), StockReply> {
    d2c_proto::identifiers::Sku::parse(sku)
        .map(|_| ())
        .map_err(|invalid| rejected(Code::Invalid, "sku", invalid.to_string()))
}
