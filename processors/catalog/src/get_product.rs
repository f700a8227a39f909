//! GetProduct: a query answered by the partition that owns the product.

use crate::content::is_identifier;
use crate::reply::{not_found, product, send};
use crate::table::CatalogRead;
use d2c_proto::catalog::v1::GetProduct;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::StateRead;

pub fn apply(
    state: &dyn StateRead,
    query: GetProduct,
    effects: &mut Effects,
) -> Result<(), HandlerError> {
    let known = if is_identifier(&query.product_id) {
        state.product(&query.product_id)?
    } else {
        None
    };
    let reply = match known {
        Some(found) => product(found),
        None => not_found(&query.product_id),
    };
    send(effects, &query.product_id, &reply);
    Ok(())
}
