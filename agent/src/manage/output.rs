//! Plain-text rendering of api answers: aligned tables and short timestamps.

use serde_json::Value;

/// Left-aligned columns separated by two spaces, headers first; `empty` when there are no rows.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return empty.to_owned();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// An RFC 3339 timestamp from the api to the second, in UTC as sent (`2026-11-26 10:07:05Z`);
/// `none` for `null`.
pub fn time(v: &Value, none: &str) -> String {
    match v.as_str() {
        None => none.to_owned(),
        Some(t) if t.len() >= 19 && t.as_bytes()[10] == b'T' => {
            let zone = match t[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit()) {
                "" | "Z" | "+00:00" => "Z",
                other => other,
            };
            format!("{} {}{zone}", &t[..10], &t[11..19])
        }
        Some(t) => t.to_owned(),
    }
}

/// A string field, or `-` when absent or empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null => "-".into(),
        Value::String(_) => "-".into(),
        other => other.to_string(),
    }
}

/// The array at `key` of `v`, or `v` itself when the api answers a bare array.
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_trim() {
        let rows = vec![
            vec!["demo".to_owned(), "2026-11-26 10:07:05Z".to_owned()],
            vec!["a-much-longer-name".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "CREATED"], &rows, "none"),
            "NAME                CREATED\n\
             demo                2026-11-26 10:07:05Z\n\
             a-much-longer-name  -"
        );
        assert_eq!(table(&["NAME"], &[], "No names."), "No names.");
    }

    #[test]
    fn times_are_shortened_to_the_second() {
        assert_eq!(
            time(&json!("2026-11-26T10:07:05.123456Z"), "-"),
            "2026-11-26 10:07:05Z"
        );
        assert_eq!(
            time(&json!("2026-11-26T10:07:05+00:00"), "-"),
            "2026-11-26 10:07:05Z"
        );
        assert_eq!(
            time(&json!("2026-11-26T10:07:05.5+02:00"), "-"),
            "2026-11-26 10:07:05+02:00"
        );
        assert_eq!(time(&Value::Null, "never"), "never");
        assert_eq!(time(&json!("yesterday"), "-"), "yesterday");
    }

    #[test]
    fn items_accept_wrapped_and_bare_lists() {
        let wrapped = json!({"reserved_names": [{"name": "a"}]});
        assert_eq!(items(&wrapped, "reserved_names").len(), 1);
        let bare = json!([{"id": 1}, {"id": 2}]);
        assert_eq!(items(&bare, "authtokens").len(), 2);
        assert!(items(&json!({}), "x").is_empty());
        assert_eq!(text(&json!("")), "-");
        assert_eq!(text(&json!(3)), "3");
    }
}
