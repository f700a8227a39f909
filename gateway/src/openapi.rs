//! `/openapi.json`: the OpenAPI document, generated from the handlers'
//! annotations and the request/response types (utoipa), so it cannot drift
//! from the code.

use axum::response::IntoResponse;
use axum::Json;
use std::sync::LazyLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "d2c commerce platform",
        description = "Customers, catalog, carts, orders, payments and inventory behind one gateway. \
Every error is `{\"error\": {\"code\", \"message\", \"field\"?, ...}}`; every response carries `x-request-id`. \
Any route that reaches a service may answer `503` + `Retry-After` at once when the gateway is at its admission limit \
(the services confirm less than is offered); nothing was sent, so retrying is safe.",
    ),
    paths(
        crate::orders::place_order,
        crate::orders::list_orders,
        crate::orders::get_order,
        crate::orders::cancel_order,
        crate::customers::register,
        crate::customers::login,
        crate::customers::me,
        crate::customers::add_address,
        crate::customers::remove_address,
        crate::carts::create_cart,
        crate::carts::get_cart,
        crate::carts::set_line,
        crate::carts::remove_line,
        crate::carts::checkout,
        crate::search::search_products,
        crate::catalog::get_product,
        crate::catalog::create_product,
        crate::catalog::update_product,
        crate::catalog::archive_product,
        crate::inventory::set_stock,
        crate::inventory::get_stock,
        crate::order_admin::get_order,
        crate::order_admin::fulfil,
        crate::order_admin::refund,
        crate::health::health,
        crate::health::ready,
        metrics,
        document,
    ),
    modifiers(&Security),
    tags(
        (name = "orders", description = "Checkout and the customer's orders"),
        (name = "customers", description = "Accounts and login"),
        (name = "carts", description = "The customer's carts"),
        (name = "catalog", description = "Products, search and stock, for storefronts"),
        (name = "admin", description = "Catalog, stock and order management (fulfilment, refunds)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // The operators' static token (D2C_ADMIN_TOKEN), also a bearer.
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// Prometheus metrics of this process (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn document() -> impl IntoResponse {
    Json(DOCUMENT.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is in the document, and every path in
    /// the document is served.
    #[test]
    fn the_document_covers_every_route() {
        let document = serde_json::to_value(&*DOCUMENT).expect("serialisable");
        let mut documented: Vec<String> = document["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .into_iter()
                    .flat_map(|methods| methods.keys())
                    .map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        documented.sort();
        let mut served: Vec<String> = crate::routes()
            .iter()
            .map(|(method, path, _)| format!("{method} {path}"))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn error_responses_have_the_error_schema() {
        let document = serde_json::to_value(&*DOCUMENT).expect("serialisable");
        let place = &document["paths"]["/orders"]["post"]["responses"];
        assert_eq!(
            place["409"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(document["components"]["schemas"]["ErrorDetail"].is_object());
        assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    }
}
