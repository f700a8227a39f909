//! The shape of every identifier a client chooses (product, SKU, category,
//! cart and address ids, payment tokens): 1 to 64 letters, digits or
//! `-_.:`. One rule, applied by the gateway at the edge and again by each
//! owner for what reaches it by Kafka.

/// The longest identifier, in bytes (all ASCII).
pub const MAX_ID_LEN: usize = 64;

/// Whether `value` is 1 to [`MAX_ID_LEN`] letters, digits or `-_.:`.
pub fn is_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
}

/// A stock-keeping unit's code, made only by [`Sku::parse`]: the gateway,
/// the catalog, orders and inventory hold SKUs to one rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

/// Why a text is not a SKU (the message a client sees).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sku must be 1 to {MAX_ID_LEN} letters, digits or -_.:")]
pub struct InvalidSku;

impl Sku {
    /// # Errors
    /// When `text` is not an identifier ([`is_identifier`]).
    pub fn parse(text: &str) -> Result<Self, InvalidSku> {
        if is_identifier(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidSku)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_is_one_to_64_letters_digits_or_dash_underscore_dot_colon() {
        for good in ["SKU-1", "a", "DEMO-00001-S", "x.y:z_w", &"A".repeat(64)] {
            assert_eq!(
                Sku::parse(good).map(|sku| sku.to_string()),
                Ok(good.to_owned())
            );
        }
        for bad in ["", "SKU 1", "SKU\u{0}1", "sku/1", "é", &"A".repeat(65)] {
            assert_eq!(Sku::parse(bad), Err(InvalidSku), "{bad:?}");
        }
        assert_eq!(
            InvalidSku.to_string(),
            "sku must be 1 to 64 letters, digits or -_.:"
        );
    }
}
