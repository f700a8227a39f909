//! Catalog search: the query a storefront sends, and its translation into
//! SQL. User text never reaches `to_tsquery` as typed: it is cut into words
//! of letters and digits, so no input can be a tsquery syntax error.

use crate::database::without_nul;
use crate::versions::IS_LATEST;
use crate::{ReadsideError, Result};
use d2c_proto::catalog::v1::Product;
use sqlx::{Postgres, QueryBuilder};

/// Words beyond these are ignored: a search box needs no more, and a huge
/// query would only cost the database.
const MAX_WORDS: usize = 16;
const MAX_WORD_CHARS: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Words to find, matched as prefixes (as-you-type).
    pub text: Option<String>,
    pub category: Option<String>,
    /// Required by `min_price`/`max_price`; alone, it keeps products that
    /// have a price in this currency.
    pub currency: Option<String>,
    /// Inclusive bounds on the lowest variant price, in minor units.
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The page: products with their rank (0 without text).
    pub items: Vec<(Product, f32)>,
    /// Matches over all pages.
    pub total: i64,
}

/// `text` as a prefix tsquery: `word:* & word:* …`, each word lower case
/// letters and digits only; `None` when no word is left.
pub fn prefix_tsquery(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let words: Vec<String> = lower
        .split(|c: char| !(c.is_alphabetic() || c.is_ascii_digit()))
        .filter(|word| !word.is_empty())
        .take(MAX_WORDS)
        .map(|word| {
            format!(
                "{}:*",
                word.chars().take(MAX_WORD_CHARS).collect::<String>()
            )
        })
        .collect();
    (!words.is_empty()).then(|| words.join(" & "))
}

/// A validated query, ready to become SQL.
pub(crate) struct Filter<'a> {
    pub tsquery: Option<String>,
    query: &'a SearchQuery,
}

impl<'a> Filter<'a> {
    pub fn parse(query: &'a SearchQuery) -> Result<Self> {
        if query.limit < 0 {
            return Err(ReadsideError::InvalidQuery("limit must not be negative"));
        }
        if query.offset < 0 {
            return Err(ReadsideError::InvalidQuery("offset must not be negative"));
        }
        if query.currency.is_none() && (query.min_price.is_some() || query.max_price.is_some()) {
            return Err(ReadsideError::InvalidQuery(
                "a price filter needs a currency",
            ));
        }
        Ok(Self {
            tsquery: query.text.as_deref().and_then(prefix_tsquery),
            query,
        })
    }

    /// ` FROM … WHERE …`: the latest version of each product on sale that
    /// matches every filter given.
    pub fn push_from_where(&self, sql: &mut QueryBuilder<'a, Postgres>) {
        sql.push(" FROM product_versions p");
        if let Some(tsquery) = &self.tsquery {
            // English stems whole words ("shirts" finds "shirt"); simple keeps
            // what English drops as a stop word, so a first letter typed
            // already finds something.
            sql.push(
                " CROSS JOIN (SELECT to_tsquery('english', t.text) || to_tsquery('simple', t.text) \
                 AS query FROM (SELECT ",
            )
            .push_bind(tsquery.clone())
            .push("::text AS text) t) q");
        }
        sql.push(" WHERE NOT p.archived AND ").push(IS_LATEST);
        if self.tsquery.is_some() {
            sql.push(" AND p.search @@ q.query");
        }
        if let Some(category) = &self.query.category {
            sql.push(" AND p.category = ")
                .push_bind(without_nul(category));
        }
        if let Some(currency) = &self.query.currency {
            sql.push(" AND p.prices ? ")
                .push_bind(without_nul(currency));
            if let Some(min) = self.query.min_price {
                sql.push(" AND (p.prices ->> ")
                    .push_bind(without_nul(currency))
                    .push(")::bigint >= ")
                    .push_bind(min);
            }
            if let Some(max) = self.query.max_price {
                sql.push(" AND (p.prices ->> ")
                    .push_bind(without_nul(currency))
                    .push(")::bigint <= ")
                    .push_bind(max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_prefixes_joined_by_and() {
        assert_eq!(
            prefix_tsquery("Lin Shirt").as_deref(),
            Some("lin:* & shirt:*")
        );
    }

    #[test]
    fn operators_and_quotes_are_stripped() {
        assert_eq!(prefix_tsquery("a & | ! ( ' :*").as_deref(), Some("a:*"));
        assert_eq!(
            prefix_tsquery("o'neil:*b").as_deref(),
            Some("o:* & neil:* & b:*")
        );
        assert_eq!(prefix_tsquery(" & | ! ( ) :* <-> "), None);
        assert_eq!(prefix_tsquery(""), None);
    }

    #[test]
    fn non_ascii_letters_are_kept_lower_case() {
        assert_eq!(
            prefix_tsquery("Über Café").as_deref(),
            Some("über:* & café:*")
        );
    }

    #[test]
    fn long_queries_are_cut() {
        let many = "w ".repeat(100);
        let query = prefix_tsquery(&many).expect("words");
        assert_eq!(query.matches(":*").count(), MAX_WORDS);
    }

    #[test]
    fn price_filter_without_currency_is_refused() {
        let query = SearchQuery {
            min_price: Some(1),
            limit: 10,
            ..SearchQuery::default()
        };
        assert!(matches!(
            Filter::parse(&query),
            Err(ReadsideError::InvalidQuery(_))
        ));
    }
}
