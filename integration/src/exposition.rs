//! Reading Prometheus text expositions (a service's `/metrics`, the
//! broker's JMX exporter): what the harness, the benchmarks and their
//! tests take from them.

/// A metric's value summed over its series whose label set contains
/// `labels` (e.g. `outcome="committed"`; empty: every series).
pub fn sum_series(text: &str, name: &str, labels: &str) -> f64 {
    series(text)
        .filter(|(series_name, series_labels, _)| {
            *series_name == name && series_labels.contains(labels)
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// Every sample of `text`: (name, label set without braces, value).
pub fn series(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.trim().parse::<f64>().ok()?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            Some((name, labels, value))
        })
}

/// The value of `name="value"` in a label set (values here hold no quotes).
pub fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE d2c_transactions_total counter
d2c_transactions_total{outcome=\"committed\"} 30
d2c_transactions_total{outcome=\"aborted\"} 2
d2c_transactions_total_extra 7
process_cpu_seconds_total 1.5
";

    #[test]
    fn series_are_summed_by_name_and_labels() {
        assert_eq!(sum_series(TEXT, "d2c_transactions_total", ""), 32.0);
        assert_eq!(
            sum_series(TEXT, "d2c_transactions_total", "outcome=\"committed\""),
            30.0
        );
        assert_eq!(sum_series(TEXT, "process_cpu_seconds_total", ""), 1.5);
        assert_eq!(sum_series(TEXT, "missing", ""), 0.0);
    }

    #[test]
    fn a_label_value_is_read_by_name() {
        assert_eq!(
            label("request=\"Produce\",version=\"9\"", "version"),
            Some("9")
        );
        assert_eq!(label("request=\"Produce\"", "outcome"), None);
    }
}
