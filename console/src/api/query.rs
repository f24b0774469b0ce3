//! The list query parameters every list shares (paging, sorting, time range, filters), and
//! listing itself: generic over JSON values for the small lists, typed for connections and
//! requests, which can hold hundreds of thousands of items.

use std::cmp::Ordering;

use serde::Serialize;
use serde_json::Value;

use super::ApiError;
use crate::views::Range;

/// Default page size.
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
pub(crate) const MAX_LIMIT: usize = 10_000;

/// Parameters that are not filters.
const RESERVED: [&str; 6] = ["offset", "limit", "sortBy", "start", "end", "q"];

/// A list query, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListQuery {
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    /// Field, and whether descending.
    pub(crate) sort: Option<(String, bool)>,
    pub(crate) range: Range,
    /// Lower-cased.
    pub(crate) q: Option<String>,
    /// Exact-match filters on item fields.
    pub(crate) filters: Vec<Filter>,
    /// Lists of things that start and end: only active (true) or only terminated ones.
    pub(crate) active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    pub(crate) field: String,
    pub(crate) raw: String,
}

/// A field's value, for filtering and sorting the typed lists.
#[derive(Debug, Clone)]
pub(crate) enum Key<'a> {
    Num(u64),
    /// Shown as 16 hex digits.
    Hex(u64),
    /// Microseconds shown as milliseconds with a fraction.
    Ms(u64),
    /// Microseconds shown as whole milliseconds.
    Time(u64),
    Str(&'a str),
    Strs(&'a [crate::store::Str]),
    StrRefs(&'a [&'a crate::store::Str]),
    /// A text made of parts (ids such as `<site>/<host>`), compared without joining them.
    Joined(Box<[&'a str]>),
    Missing,
}

pub(crate) fn joined<'a>(parts: &[&'a str]) -> Key<'a> {
    Key::Joined(parts.into())
}

/// One page of a list, as every list answers.
#[derive(Debug, Serialize)]
pub(crate) struct Page<T> {
    pub(crate) count: usize,
    pub(crate) total: usize,
    pub(crate) items: Vec<T>,
}

fn bad(param: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::BadParam {
        param: param.to_string(),
        reason: reason.to_string(),
    }
}

/// A non-negative integer; one too large for 64 bits counts as the largest.
pub(crate) fn number(param: &str, v: &str) -> Result<u64, ApiError> {
    let digits = v.strip_prefix('+').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(param, format!("{v:?} is not a non-negative integer")));
    }
    Ok(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// Checks the parameters of a list whose items have `fields`; `lives` for the lists of things
/// that start and end (connections, requests), which take `state`. Parameters named after a
/// field are filters; others that are not the common ones are ignored.
pub(crate) fn parse(
    params: &[(String, String)],
    fields: &[&str],
    lives: bool,
) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        offset: 0,
        limit: DEFAULT_LIMIT,
        sort: None,
        range: Range::ALL,
        q: None,
        filters: Vec::new(),
        active: None,
    };
    let (mut start, mut end) = (None, None);
    for (k, v) in params {
        match k.as_str() {
            "offset" => q.offset = number(k, v)?.try_into().unwrap_or(usize::MAX),
            "limit" => {
                let n = number(k, v)?;
                if n > MAX_LIMIT as u64 {
                    return Err(bad(k, format!("at most {MAX_LIMIT}")));
                }
                q.limit = n as usize;
            }
            "sortBy" => {
                let (field, dir) = v
                    .rsplit_once('.')
                    .ok_or_else(|| bad(k, "expected field.asc or field.desc"))?;
                let desc = match dir {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(bad(k, format!("{dir:?} is neither asc nor desc"))),
                };
                if !fields.contains(&field) {
                    return Err(bad(
                        k,
                        format!("no field {field:?}; one of {}", fields.join(", ")),
                    ));
                }
                q.sort = Some((field.to_string(), desc));
            }
            "start" => start = Some(number(k, v)?),
            "end" => end = Some(number(k, v)?),
            "q" => q.q = (!v.is_empty()).then(|| v.to_lowercase()),
            "state" if lives => {
                q.active = match v.as_str() {
                    "all" => None,
                    "active" => Some(true),
                    "terminated" => Some(false),
                    _ => return Err(bad(k, "expected all, active or terminated")),
                }
            }
            f if fields.contains(&f) && !RESERVED.contains(&f) => q.filters.push(Filter {
                field: f.to_string(),
                raw: v.clone(),
            }),
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(bad("start", "after end"));
    }
    q.range = Range {
        start_us: start.map_or(0, |s| s.saturating_mul(1000)),
        end_us: end.map_or(u64::MAX, |e| e.saturating_mul(1000).saturating_add(999)),
    };
    Ok(q)
}

/// Case-insensitive substring; `needle` is lower-case.
pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty()
        || hay
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

// === JSON lists ===

fn value_matches(v: &Value, raw: &str) -> bool {
    match v {
        Value::String(s) => s == raw,
        Value::Number(n) => n.to_string() == raw,
        Value::Bool(b) => b.to_string() == raw,
        Value::Array(a) => a.iter().any(|x| value_matches(x, raw)),
        _ => false,
    }
}

fn value_has_text(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => contains_ci(s, needle),
        Value::Array(a) => a.iter().any(|x| value_has_text(x, needle)),
        Value::Object(o) => o.values().any(|x| value_has_text(x, needle)),
        _ => false,
    }
}

/// Orders two values of one field; missing values go last either way.
fn cmp_values(a: Option<&Value>, b: Option<&Value>, desc: bool) -> Ordering {
    fn rank(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    let o = match (rank(a), rank(b)) {
        (None, None) => return Ordering::Equal,
        (None, _) => return Ordering::Greater,
        (_, None) => return Ordering::Less,
        (Some(a), Some(b)) => match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            (Value::Array(x), Value::Array(y)) => x.len().cmp(&y.len()),
            _ => Ordering::Equal,
        },
    };
    if desc { o.reverse() } else { o }
}

/// Filters, sorts and pages a small list through its JSON form.
pub(crate) fn list_json<T: Serialize>(items: Vec<T>, q: &ListQuery) -> Page<Value> {
    let mut values: Vec<Value> = items
        .into_iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .filter(|v| {
            q.filters
                .iter()
                .all(|f| v.get(&f.field).is_some_and(|x| value_matches(x, &f.raw)))
        })
        .filter(|v| q.q.as_deref().is_none_or(|n| value_has_text(v, n)))
        .collect();
    if let Some((field, desc)) = &q.sort {
        values.sort_by(|a, b| cmp_values(a.get(field), b.get(field), *desc));
    }
    let total = values.len();
    let items: Vec<Value> = values.into_iter().skip(q.offset).take(q.limit).collect();
    Page {
        count: items.len(),
        total,
        items,
    }
}

// === typed lists ===

/// Orders the texts the parts of `a` and `b` make, comparing slices rather than bytes.
fn cmp_joined(a: &[&str], b: &[&str]) -> Ordering {
    let mut a_parts = a.iter().map(|s| s.as_bytes());
    let mut b_parts = b.iter().map(|s| s.as_bytes());
    let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
    loop {
        while x.is_empty() {
            match a_parts.next() {
                Some(p) => x = p,
                None => break,
            }
        }
        while y.is_empty() {
            match b_parts.next() {
                Some(p) => y = p,
                None => break,
            }
        }
        if x.is_empty() || y.is_empty() {
            return x.len().cmp(&y.len());
        }
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => (x, y) = (&x[n..], &y[n..]),
            o => return o,
        }
    }
}

impl Key<'_> {
    pub(crate) fn matches(&self, raw: &str) -> bool {
        match *self {
            Key::Joined(ref parts) => parts
                .iter()
                .try_fold(raw, |rest, p| rest.strip_prefix(p))
                .is_some_and(str::is_empty),
            Key::Num(n) => raw.parse::<u64>() == Ok(n),
            Key::Hex(n) => u64::from_str_radix(raw, 16) == Ok(n),
            Key::Ms(us) => raw.parse::<f64>() == Ok(us as f64 / 1000.0),
            Key::Time(us) => raw.parse::<u64>() == Ok(us / 1000),
            Key::Str(s) => s == raw,
            Key::Strs(v) => v.iter().any(|s| &**s == raw),
            Key::StrRefs(v) => v.iter().any(|s| &***s == raw),
            Key::Missing => false,
        }
    }

    fn num(&self) -> Option<u64> {
        match *self {
            Key::Num(n) | Key::Hex(n) | Key::Ms(n) | Key::Time(n) => Some(n),
            Key::Strs(v) => Some(v.len() as u64),
            Key::StrRefs(v) => Some(v.len() as u64),
            _ => None,
        }
    }

    /// Missing values go last either way.
    pub(crate) fn cmp(&self, other: &Key<'_>, desc: bool) -> Ordering {
        let o = match (self, other) {
            (Key::Missing, Key::Missing) => return Ordering::Equal,
            (Key::Missing, _) => return Ordering::Greater,
            (_, Key::Missing) => return Ordering::Less,
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            (Key::Joined(a), Key::Joined(b)) => cmp_joined(a, b),
            (a, b) => a.num().cmp(&b.num()),
        };
        if desc { o.reverse() } else { o }
    }
}

/// Reads one field of an item.
pub(crate) type Getter<'a, I> = Box<dyn Fn(&'a I) -> Key<'a> + 'a>;

/// Filters, sorts and pages `items` (already in their default order) with `getter` choosing
/// how to read a field and `has_text` matching `q`; only the page is turned into output
/// items.
pub(crate) fn list_typed<'a, I, O>(
    items: impl Iterator<Item = &'a I>,
    q: &ListQuery,
    getter: impl Fn(&str) -> Getter<'a, I>,
    has_text: impl Fn(&'a I, &str) -> bool,
    out: impl Fn(&'a I) -> O,
) -> Page<O>
where
    I: 'a,
{
    let filters: Vec<(Getter<'a, I>, &str)> = q
        .filters
        .iter()
        .map(|f| (getter(&f.field), f.raw.as_str()))
        .collect();
    let matching = items.filter(|i| {
        filters.iter().all(|(key, raw)| key(i).matches(raw))
            && q.q.as_deref().is_none_or(|n| has_text(i, n))
    });
    let (total, page): (usize, Vec<&I>) = match &q.sort {
        None => {
            let mut total = 0;
            let mut page = Vec::new();
            for i in matching {
                if total >= q.offset && page.len() < q.limit {
                    page.push(i);
                }
                total += 1;
            }
            (total, page)
        }
        Some((field, desc)) => {
            let key = getter(field);
            let mut keyed: Vec<(Key<'a>, &I)> = matching.map(|i| (key(i), i)).collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0, *desc));
            let total = keyed.len();
            (
                total,
                keyed
                    .into_iter()
                    .skip(q.offset)
                    .take(q.limit)
                    .map(|(_, i)| i)
                    .collect(),
            )
        }
    };
    let items: Vec<O> = page.into_iter().map(out).collect();
    Page {
        count: items.len(),
        total,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const FIELDS: &[&str] = &[
        "id",
        "name",
        "size",
        "tags",
        "state",
        "startTime",
        "outcome",
    ];

    #[test]
    fn parses_the_common_parameters() {
        let q = parse(
            &params(&[
                ("offset", "5"),
                ("limit", "7"),
                ("sortBy", "size.desc"),
                ("start", "10"),
                ("end", "20"),
                ("q", "WeB"),
                ("name", "x"),
                ("state", "terminated"),
                ("unknown", "ignored"),
            ]),
            FIELDS,
            true,
        )
        .unwrap();
        assert_eq!((q.offset, q.limit), (5, 7));
        assert_eq!(q.sort, Some(("size".into(), true)));
        assert_eq!(
            q.range,
            Range {
                start_us: 10_000,
                end_us: 20_999
            }
        );
        assert_eq!(q.q.as_deref(), Some("web"));
        assert_eq!(q.active, Some(false));
        assert_eq!(
            q.filters,
            vec![Filter {
                field: "name".into(),
                raw: "x".into()
            }]
        );
        let huge = parse(
            &params(&[("offset", "99999999999999999999999")]),
            FIELDS,
            false,
        );
        assert_eq!(huge.unwrap().offset as u64, u64::MAX);
        // Elsewhere `state` is a field like any other.
        let q = parse(&params(&[("state", "up")]), FIELDS, false).unwrap();
        assert_eq!(q.filters[0].raw, "up");
    }

    #[test]
    fn bad_parameters_are_named() {
        for (k, v) in [
            ("offset", "x"),
            ("limit", "-1"),
            ("limit", "10001"),
            ("sortBy", "size"),
            ("sortBy", "size.up"),
            ("sortBy", "nope.asc"),
            ("start", "1.5"),
            ("start", ""),
            ("end", "-0"),
            ("state", "open"),
        ] {
            let e = parse(&params(&[(k, v)]), FIELDS, true).unwrap_err();
            assert!(
                matches!(&e, ApiError::BadParam { param, .. } if param == k),
                "{k}={v}: {e:?}"
            );
        }
        let e = parse(&params(&[("start", "5"), ("end", "4")]), FIELDS, true).unwrap_err();
        assert!(matches!(e, ApiError::BadParam { param, .. } if param == "start"));
    }

    #[test]
    fn json_lists_filter_sort_and_page() {
        #[derive(Serialize)]
        struct Item {
            id: &'static str,
            size: u32,
            tags: Vec<&'static str>,
        }
        let items = || {
            vec![
                Item {
                    id: "a",
                    size: 3,
                    tags: vec!["x"],
                },
                Item {
                    id: "b",
                    size: 1,
                    tags: vec!["x", "y"],
                },
                Item {
                    id: "c",
                    size: 2,
                    tags: vec![],
                },
            ]
        };
        let q = parse(&params(&[("sortBy", "size.asc")]), FIELDS, false).unwrap();
        let ids = |p: Page<Value>| {
            p.items
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(list_json(items(), &q)), ["b", "c", "a"]);
        let q = parse(
            &params(&[("tags", "x"), ("sortBy", "id.desc")]),
            FIELDS,
            false,
        )
        .unwrap();
        assert_eq!(ids(list_json(items(), &q)), ["b", "a"]);
        let q = parse(&params(&[("offset", "1"), ("limit", "1")]), FIELDS, false).unwrap();
        let p = list_json(items(), &q);
        assert_eq!((p.count, p.total), (1, 3));
        assert_eq!(ids(p), ["b"]);
        let q = parse(&params(&[("size", "2")]), FIELDS, false).unwrap();
        assert_eq!(ids(list_json(items(), &q)), ["c"]);
        let q = parse(&params(&[("q", "Y")]), FIELDS, false).unwrap();
        assert_eq!(ids(list_json(items(), &q)), ["b"]);
    }

    #[test]
    fn keys_order_missing_last() {
        let mut v = [Key::Missing, Key::Num(2), Key::Num(1)];
        v.sort_by(|a, b| a.cmp(b, true));
        assert!(matches!(v, [Key::Num(2), Key::Num(1), Key::Missing]));
        v.sort_by(|a, b| a.cmp(b, false));
        assert!(matches!(v, [Key::Num(1), Key::Num(2), Key::Missing]));
        assert!(Key::Hex(255).matches("00000000000000ff"));
        assert!(Key::Ms(1500).matches("1.5"));
        assert!(Key::Time(1_234_567).matches("1234"));
        assert!(contains_ci("Backend-API", "end-a"));
        let (a, b) = (joined(&["a", "/", "x"]), joined(&["a-b", "/", "x"]));
        assert_eq!(a.cmp(&b, false), "a/x".cmp("a-b/x"));
        for (x, y) in [("ab", "a"), ("a", "ab"), ("a/b", "a/b"), ("x/1", "x/10")] {
            let split = |s: &'static str| joined(&[&s[..1], &s[1..]]);
            assert_eq!(split(x).cmp(&joined(&[y]), false), x.cmp(y), "{x} {y}");
        }
        assert!(a.matches("a/x") && !a.matches("a/") && !a.matches("a/xy"));
    }
}
