//! A realistic demo catalog, generated deterministically: product `n` is the
//! same on every machine and every run, so seeding twice creates nothing new
//! (the catalog answers an identical create as a retry).

use crate::rng::SplitMix64;
use serde_json::{json, Value};

struct Category {
    id: &'static str,
    kinds: &'static [&'static str],
    /// Variant names; one, or sizes.
    sizes: &'static [&'static str],
    /// Price range in EUR cents.
    price: (u64, u64),
    uses: &'static [&'static str],
}

const CATEGORIES: &[Category] = &[
    Category {
        id: "shirts",
        kinds: &["shirt", "oxford shirt", "overshirt", "polo shirt", "tee"],
        sizes: &["S", "M", "L", "XL"],
        price: (1_900, 8_900),
        uses: &["the office", "weekends", "summer evenings"],
    },
    Category {
        id: "trousers",
        kinds: &["chinos", "jeans", "cargo trousers", "shorts", "joggers"],
        sizes: &["30", "32", "34", "36"],
        price: (2_900, 12_900),
        uses: &["everyday wear", "travel", "the city"],
    },
    Category {
        id: "knitwear",
        kinds: &["sweater", "cardigan", "hoodie", "turtleneck", "vest"],
        sizes: &["S", "M", "L"],
        price: (3_900, 18_900),
        uses: &["cold mornings", "layering", "autumn walks"],
    },
    Category {
        id: "jackets",
        kinds: &["rain jacket", "parka", "bomber", "blazer", "gilet"],
        sizes: &["S", "M", "L", "XL"],
        price: (6_900, 34_900),
        uses: &["wet weather", "commuting", "the mountains"],
    },
    Category {
        id: "shoes",
        kinds: &["sneakers", "boots", "loafers", "sandals", "trail runners"],
        sizes: &["40", "41", "42", "43", "44"],
        price: (4_900, 24_900),
        uses: &["long days on your feet", "running errands", "hiking"],
    },
    Category {
        id: "bags",
        kinds: &["backpack", "tote", "duffel", "messenger bag", "wallet"],
        sizes: &["one size"],
        price: (1_900, 19_900),
        uses: &["daily commutes", "weekend trips", "carrying a laptop"],
    },
    Category {
        id: "home",
        kinds: &["blanket", "cushion", "mug", "candle", "throw"],
        sizes: &["one size"],
        price: (900, 9_900),
        uses: &["the living room", "slow Sundays", "gifting"],
    },
    Category {
        id: "accessories",
        kinds: &["beanie", "scarf", "cap", "belt", "socks"],
        sizes: &["one size"],
        price: (900, 4_900),
        uses: &["finishing an outfit", "winter", "gifting"],
    },
];

const MATERIALS: &[&str] = &[
    "linen",
    "cotton",
    "merino",
    "wool",
    "denim",
    "canvas",
    "leather",
    "suede",
    "cashmere",
    "recycled nylon",
    "corduroy",
    "flannel",
    "hemp",
    "alpaca",
    "waxed cotton",
    "bamboo",
];

const COLOURS: &[&str] = &[
    "navy",
    "charcoal",
    "olive",
    "sand",
    "rust",
    "cream",
    "forest green",
    "sky blue",
    "black",
    "stone",
    "burgundy",
    "mustard",
    "off-white",
    "slate",
    "terracotta",
    "indigo",
];

const STYLES: &[&str] = &[
    "Classic",
    "Relaxed",
    "Slim",
    "Heritage",
    "Everyday",
    "Coastal",
    "Alpine",
    "Urban",
    "Vintage",
    "Essential",
    "Oversized",
    "Tailored",
    "Field",
    "Studio",
    "Harbour",
    "Nordic",
];

const QUALITIES: &[&str] = &[
    "breathable",
    "hard-wearing",
    "soft",
    "lightweight",
    "warm",
    "water-repellent",
    "easy-care",
    "organic",
    "garment-dyed",
    "brushed",
];

/// The id of demo product `index`.
pub fn product_id(index: u64) -> String {
    format!("demo-{index:05}")
}

/// The body of `POST /admin/products` for demo product `index`.
pub fn product(index: u64) -> Value {
    let mut rng = SplitMix64(index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD2C);
    let category = rng.pick(CATEGORIES);
    let kind = rng.pick(category.kinds);
    let material = rng.pick(MATERIALS);
    let colour = rng.pick(COLOURS);
    let style = rng.pick(STYLES);
    let quality = rng.pick(QUALITIES);
    let usage = rng.pick(category.uses);
    let name = format!("{style} {material} {kind} in {colour}");
    let description = format!(
        "A {quality} {kind} made from {material}, in {colour}. Cut for {usage}, \
         it is made to last and easy to look after. Part of our {} collection.",
        style.to_lowercase()
    );
    let euro = round_price(rng.range(category.price.0, category.price.1));
    let variants: Vec<Value> = category
        .sizes
        .iter()
        .map(|size| {
            json!({
                "sku": sku(index, size),
                "name": size,
                "prices": [
                    {"currency": "EUR", "amount_minor": euro},
                    {"currency": "USD", "amount_minor": round_price(euro * 108 / 100)},
                ],
            })
        })
        .collect();
    json!({
        "product_id": product_id(index),
        "name": name,
        "description": description,
        "category": category.id,
        "variants": variants,
    })
}

/// The first SKU of demo product `index` and its EUR price: what a load run
/// orders, at the catalog's price.
pub fn first_offer(index: u64) -> (String, u64) {
    let body = product(index);
    let variant = &body["variants"][0];
    let sku = variant["sku"].as_str().unwrap_or_default().to_owned();
    let euro = variant["prices"][0]["amount_minor"]
        .as_u64()
        .unwrap_or_default();
    (sku, euro)
}

/// The SKUs of demo product `index`, with the units to stock (some sold
/// out, so a storefront shows both).
pub fn stock(index: u64) -> Vec<(String, i64)> {
    let mut rng = SplitMix64(index ^ 0x0057_00C4);
    let body = product(index);
    body["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|variant| variant["sku"].as_str())
        .map(|sku| {
            let units = if rng.range(0, 19) == 0 {
                0
            } else {
                rng.range(5, 500) as i64
            };
            (sku.to_owned(), units)
        })
        .collect()
}

fn sku(index: u64, size: &str) -> String {
    let size: String = size
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_uppercase();
    format!("DEMO-{index:05}-{size}")
}

/// Shop prices end in .99.
fn round_price(cents: u64) -> u64 {
    (cents / 100) * 100 + 99
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn demo_products_are_stable_distinct_and_valid() {
        assert_eq!(product(7), product(7));
        let mut ids = HashSet::new();
        let mut skus = HashSet::new();
        let mut names = HashSet::new();
        for index in 0..2_000 {
            let body = product(index);
            assert!(ids.insert(body["product_id"].as_str().expect("id").to_owned()));
            names.insert(body["name"].as_str().expect("name").to_owned());
            let name_chars = body["name"].as_str().expect("name").chars().count();
            assert!((1..=200).contains(&name_chars));
            for (sku, units) in stock(index) {
                assert!(
                    sku.len() <= 64 && sku.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                );
                assert!(skus.insert(sku), "SKUs are unique across products");
                assert!((0..=500).contains(&units));
            }
        }
        assert!(names.len() > 1_500, "names vary: {}", names.len());
    }

    #[test]
    fn the_readme_example_orders_a_stocked_demo_sku_at_its_price() {
        // README.md and `./dev up`'s hints order two of this SKU at this price.
        assert_eq!(first_offer(1), ("DEMO-00001-S".to_owned(), 17_399));
        let units = stock(1)
            .into_iter()
            .find(|(sku, _)| sku == "DEMO-00001-S")
            .map(|(_, units)| units);
        assert!(units.is_some_and(|units| units >= 2), "{units:?}");
    }
}
