//! Products, versioned by insert: one row per version the catalog published.
//! Reads take each product's latest version.

use crate::database::without_nul;
use crate::search::{self, SearchPage, SearchQuery};
use crate::versions::IS_LATEST;
use crate::{ReadsideError, Result};
use d2c_proto::catalog::v1::Product;
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use std::collections::BTreeMap;

/// Inserts one product version; a version already stored is left as it is.
pub async fn insert_product_version(conn: &mut PgConnection, product: &Product) -> Result<u64> {
    insert_product_versions(conn, std::slice::from_ref(product)).await
}

/// Inserts product versions in one statement; versions already stored (a
/// replay) are skipped. Returns how many rows were inserted.
pub async fn insert_product_versions(conn: &mut PgConnection, products: &[Product]) -> Result<u64> {
    if products.is_empty() {
        return Ok(0);
    }
    let columns = Columns::of(products);
    let inserted = sqlx::query(
        "INSERT INTO product_versions
             (product_id, version, doc, name, description, category, archived, skus, prices)
         SELECT product_id, version, doc, name, description, category, archived,
                ARRAY(SELECT jsonb_array_elements_text(skus::jsonb)), prices::jsonb
         FROM UNNEST($1::text[], $2::int8[], $3::bytea[], $4::text[], $5::text[], $6::text[],
                     $7::bool[], $8::text[], $9::text[])
              AS batch(product_id, version, doc, name, description, category, archived,
                       skus, prices)
         ON CONFLICT DO NOTHING",
    )
    .bind(columns.ids)
    .bind(columns.versions)
    .bind(columns.docs)
    .bind(columns.names)
    .bind(columns.descriptions)
    .bind(columns.categories)
    .bind(columns.archived)
    .bind(columns.skus)
    .bind(columns.prices)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected())
}

/// One array per column. SKU lists travel as JSON arrays because UNNEST
/// flattens a two-dimensional array instead of yielding its rows.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    versions: Vec<i64>,
    docs: Vec<Vec<u8>>,
    names: Vec<String>,
    descriptions: Vec<String>,
    categories: Vec<String>,
    archived: Vec<bool>,
    skus: Vec<String>,
    prices: Vec<String>,
}

impl Columns {
    fn of(products: &[Product]) -> Self {
        let mut columns = Self::default();
        for product in products {
            columns.ids.push(without_nul(&product.product_id));
            columns.versions.push(product.version);
            columns.docs.push(product.encode_to_vec());
            columns.names.push(without_nul(&product.name));
            columns.descriptions.push(without_nul(&product.description));
            columns.categories.push(without_nul(&product.category));
            columns.archived.push(product.archived);
            let skus: Vec<String> = product
                .variants
                .iter()
                .map(|variant| without_nul(&variant.sku))
                .collect();
            columns.skus.push(serde_json::json!(skus).to_string());
            columns
                .prices
                .push(serde_json::json!(lowest_prices(product)).to_string());
        }
        columns
    }
}

/// Currency → the lowest price of any variant, what a price filter compares.
fn lowest_prices(product: &Product) -> BTreeMap<String, i64> {
    let mut lowest = BTreeMap::new();
    for price in product.variants.iter().flat_map(|variant| &variant.prices) {
        lowest
            .entry(without_nul(&price.currency))
            .and_modify(|amount: &mut i64| *amount = (*amount).min(price.amount_minor))
            .or_insert(price.amount_minor);
    }
    lowest
}

/// The latest version of a product, archived or not.
pub async fn product(pool: &PgPool, product_id: &str) -> Result<Option<Product>> {
    let row = sqlx::query(
        "SELECT product_id, version, doc FROM product_versions
         WHERE product_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(without_nul(product_id))
    .fetch_optional(pool)
    .await?;
    row.map(|row| decode_row(&row)).transpose()
}

/// The latest version of the product whose latest version has `sku`. Should
/// two products claim one SKU, the one projected last wins.
pub async fn product_by_sku(pool: &PgPool, sku: &str) -> Result<Option<Product>> {
    let row = sqlx::query(&format!(
        "SELECT p.product_id, p.version, p.doc FROM product_versions p
         WHERE p.skus @> ARRAY[$1::text] AND {IS_LATEST}
         ORDER BY p.projected_at DESC, p.product_id LIMIT 1"
    ))
    .bind(without_nul(sku))
    .fetch_optional(pool)
    .await?;
    row.map(|row| decode_row(&row)).transpose()
}

/// Full-text search over the latest versions of products on sale. With text,
/// best rank first (name matches outrank category, then description ones);
/// without, by name. Ties break on the product id, so pages are stable.
pub async fn search(pool: &PgPool, query: &SearchQuery) -> Result<SearchPage> {
    let filter = search::Filter::parse(query)?;
    let mut select = QueryBuilder::<Postgres>::new("SELECT p.product_id, p.version, p.doc, ");
    match &filter.tsquery {
        Some(_) => select.push("ts_rank(p.search, q.query) AS rank"),
        None => select.push("0::real AS rank"),
    };
    filter.push_from_where(&mut select);
    match &filter.tsquery {
        Some(_) => select.push(" ORDER BY rank DESC, p.product_id"),
        None => select.push(" ORDER BY p.name, p.product_id"),
    };
    select
        .push(" LIMIT ")
        .push_bind(query.limit)
        .push(" OFFSET ")
        .push_bind(query.offset);
    let rows = select.build().fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(|row| Ok((decode_row(row)?, row.try_get::<f32, _>("rank")?)))
        .collect::<Result<Vec<_>>>()?;

    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*)");
    filter.push_from_where(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    Ok(SearchPage { items, total })
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<Product> {
    let doc: Vec<u8> = row.try_get("doc")?;
    Product::decode(doc.as_slice()).map_err(|source| ReadsideError::Decode {
        table: "product_versions",
        id: row.try_get("product_id").unwrap_or_default(),
        version: row.try_get("version").unwrap_or_default(),
        source,
    })
}
