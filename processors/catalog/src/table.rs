//! The catalog table:
//!
//! - `Products`: product id → Product (protobuf), the product as last changed.

use d2c_proto::catalog::v1::Product;
use d2c_runtime::handler::read_record;
use d2c_runtime::{Effects, HandlerError};
use d2c_state::{StateRead, Table};

pub trait CatalogRead {
    fn product(&self, product_id: &str) -> Result<Option<Product>, HandlerError>;
}

pub trait CatalogWrite {
    fn put_product(&mut self, product: &Product);
}

impl<S: StateRead> CatalogRead for S {
    fn product(&self, product_id: &str) -> Result<Option<Product>, HandlerError> {
        read_record(self, Table::Products, product_id)
    }
}

impl CatalogRead for dyn StateRead + '_ {
    fn product(&self, product_id: &str) -> Result<Option<Product>, HandlerError> {
        read_record(self, Table::Products, product_id)
    }
}

impl CatalogWrite for Effects {
    fn put_product(&mut self, product: &Product) {
        self.put_record(Table::Products, &product.product_id, product);
    }
}
