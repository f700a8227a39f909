//! CreateProduct (admin): a new product at version 1.

use crate::content::{check_product_id, Content};
use crate::reply::{invalid, product, rejected, send};
use crate::table::{CatalogRead, CatalogWrite};
use d2c_proto::catalog::v1::{CreateProduct, Product, ProductCreated, ProductReply};
use d2c_proto::common::v1::rejection::Code;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: CreateProduct,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let reply = create(state, &command, effects)?;
    send(effects, &command.product_id, &reply);
    Ok(())
}

fn create(
    state: &dyn StateRead,
    command: &CreateProduct,
    effects: &mut Effects,
) -> Result<ProductReply, HandlerError> {
    if let Err(breach) = check_product_id(&command.product_id) {
        return Ok(invalid(breach));
    }
    let content = Content {
        name: &command.name,
        description: &command.description,
        category: &command.category,
        variants: &command.variants,
    };
    if let Err(breach) = content.check() {
        return Ok(invalid(breach));
    }
    if let Some(existing) = state.product(&command.product_id)? {
        // The same content again is a retry of the create that made it.
        if content.matches(&existing) {
            return Ok(product(existing));
        }
        return Ok(rejected(
            Code::Conflict,
            "product_id",
            format!(
                "product {} exists with different content",
                command.product_id
            ),
        ));
    }
    let mut created = Product {
        product_id: command.product_id.clone(),
        archived: false,
        version: 1,
        updated_at_ms: effects.cause().sent_at_ms,
        ..Product::default()
    };
    content.set_on(&mut created);
    effects.put_product(&created);
    effects.send(
        topic::CATALOG_EVENTS,
        &created.product_id,
        &ProductCreated {
            product: Some(created.clone()),
        },
    );
    Ok(product(created))
}
