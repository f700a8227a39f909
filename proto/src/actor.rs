//! Who is asking: an operator (the admin API, authorised by its token) or
//! one customer (authorised by theirs). Commands carry it as their
//! `customer_id` field, empty for an operator; this is the one place that
//! reads and writes that convention.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Sees and acts on every order.
    Operator,
    /// Sees and acts on their own orders only.
    Customer(String),
}

impl Actor {
    /// The actor a command's `customer_id` names.
    pub fn from_customer_id(customer_id: &str) -> Self {
        if customer_id.is_empty() {
            Self::Operator
        } else {
            Self::Customer(customer_id.to_owned())
        }
    }

    /// The `customer_id` a command carries for this actor.
    pub fn customer_id(&self) -> &str {
        match self {
            Self::Operator => "",
            Self::Customer(customer_id) => customer_id,
        }
    }

    /// Whether this actor may see (and act on) what `owner` owns; anyone
    /// else's is answered as if it did not exist, so ids cannot be probed.
    pub fn may_see(&self, owner: &str) -> bool {
        match self {
            Self::Operator => true,
            Self::Customer(customer_id) => customer_id == owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_sees_everything_a_customer_only_their_own() {
        let operator = Actor::from_customer_id("");
        assert_eq!(operator, Actor::Operator);
        assert_eq!(operator.customer_id(), "");
        assert!(operator.may_see("c-1") && operator.may_see(""));

        let customer = Actor::from_customer_id("c-1");
        assert_eq!(customer.customer_id(), "c-1");
        assert!(customer.may_see("c-1"));
        assert!(!customer.may_see("c-2"));
        assert!(!customer.may_see(""), "an order of nobody is nobody's");
    }
}
