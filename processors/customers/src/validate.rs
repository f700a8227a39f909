//! The content rules of the customers service. A breach is a `CODE_INVALID`
//! rejection naming the field the way the JSON of the HTTP edge names it
//! (`address.country`).

use crate::reply::invalid;
use d2c_proto::common::v1::Rejection;
use d2c_proto::customers::v1::Address;

pub const MIN_EMAIL_CHARS: usize = 3;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_LABEL_CHARS: usize = 50;
pub const MAX_ADDRESSES: usize = 20;
pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 1_000;
/// 100 million in minor units (1,000,000.00 EUR), as in the catalog.
pub const MAX_UNIT_PRICE_MINOR: i64 = 100_000_000;
/// The gateway hashes passwords with argon2 (PHC string format); anything
/// else means a sender that skipped hashing.
pub const PASSWORD_HASH_PREFIX: &str = "$argon2";

pub use d2c_proto::identifiers::{is_identifier, MAX_ID_LEN};

pub fn check_identifier(field: &str, value: &str) -> Result<(), Rejection> {
    if is_identifier(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{field} must be 1 to {MAX_ID_LEN} letters, digits or -_.:"),
        ))
    }
}

/// A plausible address, already normalised: one `@` with something on each
/// side and no white space. Whether it receives mail is not ours to know.
pub fn check_email(email: &str) -> Result<(), Rejection> {
    let chars = email.chars().count();
    let plausible = (MIN_EMAIL_CHARS..=MAX_EMAIL_CHARS).contains(&chars)
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if plausible {
        Ok(())
    } else {
        Err(invalid(
            "email",
            format!(
                "email must be an address like ann@example.com \
                 ({MIN_EMAIL_CHARS} to {MAX_EMAIL_CHARS} characters, one @)"
            ),
        ))
    }
}

/// Required text: not blank, at most `max` characters.
pub fn check_required(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(invalid(
            field,
            format!("{field} must have 1 to {max} characters"),
        ));
    }
    Ok(())
}

/// Optional text: at most `max` characters.
pub fn check_optional(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.chars().count() > max {
        return Err(invalid(
            field,
            format!("{field} has at most {max} characters"),
        ));
    }
    Ok(())
}

pub fn check_password_hash(password_hash: &str) -> Result<(), Rejection> {
    if password_hash.starts_with(PASSWORD_HASH_PREFIX) {
        Ok(())
    } else {
        Err(invalid(
            "password_hash",
            "password_hash must be an argon2 PHC string",
        ))
    }
}

pub fn check_address(address: &Address) -> Result<(), Rejection> {
    check_identifier("address.address_id", &address.address_id)?;
    check_optional("address.label", &address.label, MAX_LABEL_CHARS)?;
    check_required("address.name", &address.name, MAX_NAME_CHARS)?;
    check_required("address.line1", &address.line1, MAX_NAME_CHARS)?;
    check_optional("address.line2", &address.line2, MAX_NAME_CHARS)?;
    check_required("address.city", &address.city, MAX_NAME_CHARS)?;
    check_required("address.postal_code", &address.postal_code, MAX_NAME_CHARS)?;
    if !is_upper_code(&address.country, 2) {
        return Err(invalid(
            "address.country",
            format!(
                "{:?} is not a country code (two upper-case letters)",
                address.country
            ),
        ));
    }
    Ok(())
}

pub fn check_currency(currency: &str) -> Result<(), Rejection> {
    if is_upper_code(currency, 3) {
        Ok(())
    } else {
        Err(invalid(
            "currency",
            format!("{currency:?} is not a currency code (three upper-case letters)"),
        ))
    }
}

pub fn check_quantity(quantity: i64) -> Result<(), Rejection> {
    if (0..=MAX_QUANTITY).contains(&quantity) {
        Ok(())
    } else {
        Err(invalid(
            "quantity",
            format!("quantity must be between 0 and {MAX_QUANTITY}"),
        ))
    }
}

pub fn check_unit_price(unit_price_minor: i64) -> Result<(), Rejection> {
    if (0..=MAX_UNIT_PRICE_MINOR).contains(&unit_price_minor) {
        Ok(())
    } else {
        Err(invalid(
            "unit_price_minor",
            format!("unit_price_minor must be between 0 and {MAX_UNIT_PRICE_MINOR}"),
        ))
    }
}

fn is_upper_code(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|byte| byte.is_ascii_uppercase())
}
