//! `GET /products`: catalog search on the Postgres read side (full-text
//! search with prefix matching, filters, stable pagination), served from the
//! local cache when the same page was asked for recently.

use crate::catalog::{ProductJson, MAX_AMOUNT_MINOR};
use crate::error::{ApiError, ErrorBody};
use crate::validate::{int_param, is_currency, is_identifier, query_params};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use d2c_readside::SearchQuery;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const MAX_QUERY_CHARS: usize = 200;
pub const MAX_LIMIT: i64 = 100;
pub const DEFAULT_LIMIT: i64 = 20;
/// Deep pages cost the database more than they help anyone.
pub const MAX_OFFSET: i64 = 10_000;

/// The query parameters, as documented (parsed by hand so that every error
/// names its parameter).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SearchParams {
    /// Words to look for in name, category and description; the last word
    /// may be a prefix (as-you-type). At most 200 characters.
    q: Option<String>,
    /// Only this category.
    category: Option<String>,
    /// The currency of `min_price`/`max_price` (required with them).
    currency: Option<String>,
    /// Lowest price, in minor units of `currency`.
    min_price: Option<i64>,
    /// Highest price, in minor units of `currency`.
    max_price: Option<i64>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<i64>,
    /// Items to skip, 0 to 10000 (default 0).
    offset: Option<i64>,
}

const PARAMS: &[&str] = &[
    "q",
    "category",
    "currency",
    "min_price",
    "max_price",
    "limit",
    "offset",
];

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchHitJson {
    #[serde(flatten)]
    pub product: ProductJson,
    /// Relevance (`ts_rank`); 0 when browsing without `q`.
    pub rank: f32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchPageJson {
    pub items: Vec<SearchHitJson>,
    /// Matches in all, over every page.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Parses and checks the query string.
pub fn parse_search(raw: Option<&str>) -> Result<SearchQuery, ApiError> {
    let params = query_params(raw, PARAMS)?;
    let text = params
        .get("q")
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if text
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
    {
        return Err(ApiError::invalid(
            "q",
            format!("q has at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    let category = params.get("category").cloned();
    if category.as_deref().is_some_and(|c| !is_identifier(c)) {
        return Err(ApiError::invalid(
            "category",
            "category is not a category id",
        ));
    }
    let currency = params.get("currency").cloned();
    if currency.as_deref().is_some_and(|c| !is_currency(c)) {
        return Err(ApiError::invalid(
            "currency",
            "currency must be a supported ISO 4217 code such as EUR",
        ));
    }
    let prices = 0..=MAX_AMOUNT_MINOR;
    let min_price = int_param(&params, "min_price", prices.clone(), None)?;
    let max_price = int_param(&params, "max_price", prices, None)?;
    if (min_price.is_some() || max_price.is_some()) && currency.is_none() {
        return Err(ApiError::invalid(
            "currency",
            "a price filter needs the currency it is in",
        ));
    }
    if let (Some(min), Some(max)) = (min_price, max_price) {
        if min > max {
            return Err(ApiError::invalid(
                "min_price",
                "min_price is above max_price",
            ));
        }
    }
    Ok(SearchQuery {
        text,
        category,
        currency,
        min_price,
        max_price,
        limit: int_param(&params, "limit", 1..=MAX_LIMIT, Some(DEFAULT_LIMIT))?
            .unwrap_or(DEFAULT_LIMIT),
        offset: int_param(&params, "offset", 0..=MAX_OFFSET, Some(0))?.unwrap_or(0),
    })
}

/// One key per distinct search, however the query string was spelled.
fn cache_key(query: &SearchQuery) -> String {
    format!("{query:?}")
}

#[utoipa::path(get, path = "/products", tag = "catalog",
    params(SearchParams),
    responses(
        (status = 200, description = "A page of matching products, best first", body = SearchPageJson),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 422, description = "A parameter is invalid (named in `error.field`)", body = ErrorBody),
        (status = 503, description = "The read side is unavailable", body = ErrorBody),
    ))]
pub async fn search_products(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_search(raw.as_deref())?;
    let key = cache_key(&query);
    let page = app.cache.search(&key, load_page(&app, query)).await?;
    Ok(([(CONTENT_TYPE, "application/json")], page).into_response())
}

async fn load_page(app: &AppState, query: SearchQuery) -> Result<Bytes, ApiError> {
    let page = d2c_readside::search(&app.reads, &query)
        .await
        .map_err(crate::error::read_side)?;
    let body = SearchPageJson {
        items: page
            .items
            .into_iter()
            .map(|(product, rank)| SearchHitJson {
                product: product.into(),
                rank,
            })
            .collect(),
        total: page.total,
        limit: query.limit,
        offset: query.offset,
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|error| ApiError::internal(format!("search page not serialisable: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters_are_checked_by_name() {
        let query = parse_search(Some("q=linen+sh&category=shirts&currency=EUR&min_price=100&max_price=5000&limit=5&offset=10")).expect("valid");
        assert_eq!(query.text.as_deref(), Some("linen sh"));
        assert_eq!((query.limit, query.offset), (5, 10));
        assert_eq!((query.min_price, query.max_price), (Some(100), Some(5000)));
        let defaults = parse_search(None).expect("valid");
        assert_eq!(
            (defaults.limit, defaults.offset, defaults.text),
            (20, 0, None)
        );
        let cases = [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("offset=-1", "offset"),
            ("min_price=x&currency=EUR", "min_price"),
            ("min_price=10", "currency"),
            ("currency=XXX", "currency"),
            ("min_price=10&max_price=5&currency=EUR", "min_price"),
            ("category=a%2Fb", "category"),
            ("colour=red", "colour"),
            ("q=a&q=b", "q"),
        ];
        for (raw, field) in cases {
            let error = parse_search(Some(raw)).expect_err(raw);
            assert_eq!(error.status.as_u16(), 422, "{raw}");
            assert_eq!(error.field.as_deref(), Some(field), "{raw}");
        }
        let long = format!("q={}", "a".repeat(201));
        assert_eq!(
            parse_search(Some(&long))
                .expect_err("long")
                .field
                .as_deref(),
            Some("q")
        );
    }

    #[test]
    fn spelling_does_not_split_the_cache() {
        let a = parse_search(Some("q=shirt&limit=20")).expect("valid");
        let b = parse_search(Some("limit=20&q=%20shirt%20")).expect("valid");
        assert_eq!(cache_key(&a), cache_key(&b));
    }
}
