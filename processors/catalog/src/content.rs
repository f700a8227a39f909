//! The content rules of a product, shared by CreateProduct and UpdateProduct.
//! A breach is reported as the field it concerns, named the way the JSON of
//! the HTTP edge names it (`variants[1].prices[0].currency`).

use d2c_proto::catalog::v1::{Product, Variant};
use d2c_proto::identifiers::Sku;
use std::collections::HashSet;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
pub const MAX_VARIANTS: usize = 100;
pub const MAX_PRICES: usize = 50;
/// 100 million in minor units (1,000,000.00 EUR).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000;

/// A refused field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub field: String,
    pub message: String,
}

fn breach(field: impl Into<String>, message: impl Into<String>) -> Breach {
    Breach {
        field: field.into(),
        message: message.into(),
    }
}

pub use d2c_proto::identifiers::{is_identifier, MAX_ID_LEN};

pub fn check_product_id(product_id: &str) -> Result<(), Breach> {
    if is_identifier(product_id) {
        Ok(())
    } else {
        Err(breach(
            "product_id",
            format!("product_id must be 1 to {MAX_ID_LEN} letters, digits or -_.:"),
        ))
    }
}

/// The content of a product: what a create or an update sets.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub category: &'a str,
    pub variants: &'a [Variant],
}

impl<'a> Content<'a> {
    pub fn of(product: &'a Product) -> Self {
        Self {
            name: &product.name,
            description: &product.description,
            category: &product.category,
            variants: &product.variants,
        }
    }

    /// Same content as `product` (identity fields, version and time aside).
    pub fn matches(&self, product: &Product) -> bool {
        self.name == product.name
            && self.description == product.description
            && self.category == product.category
            && self.variants == product.variants.as_slice()
    }

    /// Writes this content into `product`.
    pub fn set_on(&self, product: &mut Product) {
        product.name = self.name.to_owned();
        product.description = self.description.to_owned();
        product.category = self.category.to_owned();
        product.variants = self.variants.to_vec();
    }

    pub fn check(&self) -> Result<(), Breach> {
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() || name_chars > MAX_NAME_CHARS {
            return Err(breach(
                "name",
                format!("name must have 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(breach(
                "description",
                format!("description has at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if !is_identifier(self.category) {
            return Err(breach(
                "category",
                format!("category must be 1 to {MAX_ID_LEN} letters, digits or -_.:"),
            ));
        }
        if self.variants.is_empty() {
            return Err(breach("variants", "a product needs at least one variant"));
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(breach(
                "variants",
                format!("a product has at most {MAX_VARIANTS} variants"),
            ));
        }
        let mut skus = HashSet::new();
        for (index, variant) in self.variants.iter().enumerate() {
            check_variant(index, variant)?;
            if !skus.insert(variant.sku.as_str()) {
                return Err(breach(
                    format!("variants[{index}].sku"),
                    format!("{} appears on an earlier variant", variant.sku),
                ));
            }
        }
        Ok(())
    }
}

fn check_variant(index: usize, variant: &Variant) -> Result<(), Breach> {
    if let Err(invalid) = Sku::parse(&variant.sku) {
        return Err(breach(
            format!("variants[{index}].sku"),
            invalid.to_string(),
        ));
    }
    if variant.name.chars().count() > MAX_NAME_CHARS {
        return Err(breach(
            format!("variants[{index}].name"),
            format!("a variant name has at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if variant.prices.len() > MAX_PRICES {
        return Err(breach(
            format!("variants[{index}].prices"),
            format!("a variant has at most {MAX_PRICES} prices"),
        ));
    }
    let mut currencies = HashSet::new();
    for (price_index, price) in variant.prices.iter().enumerate() {
        let field = format!("variants[{index}].prices[{price_index}]");
        let currency = &price.currency;
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
            return Err(breach(
                format!("{field}.currency"),
                format!("{currency:?} is not a currency code (three upper-case letters)"),
            ));
        }
        if !(0..=MAX_AMOUNT_MINOR).contains(&price.amount_minor) {
            return Err(breach(
                format!("{field}.amount_minor"),
                format!("amount_minor must be between 0 and {MAX_AMOUNT_MINOR}"),
            ));
        }
        if !currencies.insert(currency.as_str()) {
            return Err(breach(
                format!("{field}.currency"),
                format!("the variant has an earlier price in {currency}"),
            ));
        }
    }
    Ok(())
}
