//! UpdateProduct (admin): replace the content of a product that is not
//! archived, optionally only at an expected version.

use crate::content::{check_product_id, Content};
use crate::reply::{invalid, not_found, product, rejected, send};
use crate::table::{CatalogRead, CatalogWrite};
use d2c_proto::catalog::v1::{ProductReply, ProductUpdated, UpdateProduct};
use d2c_proto::common::v1::rejection::Code;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: UpdateProduct,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let reply = update(state, &command, effects)?;
    send(effects, &command.product_id, &reply);
    Ok(())
}

fn update(
    state: &dyn StateRead,
    command: &UpdateProduct,
    effects: &mut Effects,
) -> Result<ProductReply, HandlerError> {
    if let Err(breach) = check_product_id(&command.product_id) {
        return Ok(invalid(breach));
    }
    if command.expected_version < 0 {
        return Ok(rejected(
            Code::Invalid,
            "expected_version",
            "expected_version cannot be negative",
        ));
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
    let Some(mut current) = state.product(&command.product_id)? else {
        return Ok(not_found(&command.product_id));
    };
    if command.expected_version != 0 && command.expected_version != current.version {
        return Ok(rejected(
            Code::Conflict,
            "expected_version",
            format!(
                "product {} is at version {}, not {}",
                current.product_id, current.version, command.expected_version
            ),
        ));
    }
    if current.archived {
        return Ok(rejected(
            Code::IllegalTransition,
            "archived",
            format!(
                "product {} is archived and cannot change",
                current.product_id
            ),
        ));
    }
    content.set_on(&mut current);
    current.version += 1;
    current.updated_at_ms = effects.cause().sent_at_ms;
    effects.put_product(&current);
    effects.send(
        topic::CATALOG_EVENTS,
        &current.product_id,
        &ProductUpdated {
            product: Some(current.clone()),
        },
    );
    Ok(product(current))
}
