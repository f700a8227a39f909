//! ArchiveProduct (admin): withdraw a product from sale, for good. Archiving
//! an archived product answers it and changes nothing.

use crate::content::check_product_id;
use crate::reply::{invalid, not_found, product, send};
use crate::table::{CatalogRead, CatalogWrite};
use d2c_proto::catalog::v1::{ArchiveProduct, ProductArchived, ProductReply};
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;
use d2c_topology::topic;

pub fn apply(
    state: &dyn StateRead,
    command: ArchiveProduct,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let reply = archive(state, &command, effects)?;
    send(effects, &command.product_id, &reply);
    Ok(())
}

fn archive(
    state: &dyn StateRead,
    command: &ArchiveProduct,
    effects: &mut Effects,
) -> Result<ProductReply, HandlerError> {
    if let Err(breach) = check_product_id(&command.product_id) {
        return Ok(invalid(breach));
    }
    let Some(mut current) = state.product(&command.product_id)? else {
        return Ok(not_found(&command.product_id));
    };
    if current.archived {
        return Ok(product(current));
    }
    current.archived = true;
    current.version += 1;
    current.updated_at_ms = effects.cause().sent_at_ms;
    effects.put_product(&current);
    effects.send(
        topic::CATALOG_EVENTS,
        &current.product_id,
        &ProductArchived {
            product: Some(current.clone()),
        },
    );
    Ok(product(current))
}
