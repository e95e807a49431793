//! `{{ name }}` placeholders in operator-written titles, descriptions and runbook
//! parameters (rules, response plans).

use std::collections::BTreeMap;

/// Fills `{{ name }}` placeholders; unknown or absent names render empty, and an unclosed
/// `{{` is kept as written.
pub fn render(template: &str, vars: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        if let Some(v) = vars.get(after[..end].trim()) {
            out.push_str(v);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The names a template's placeholders use, in order.
pub fn variables(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        let start = rest.find("{{")?;
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        rest = &after[end + 2..];
        Some(after[..end].trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_known_and_blanks_unknown() {
        let mut v = BTreeMap::new();
        v.insert("a", "x".to_owned());
        assert_eq!(render("{{ a }}-{{b}}-{{a}}", &v), "x--x");
        assert_eq!(render("no vars", &v), "no vars");
        assert_eq!(render("open {{ a", &v), "open {{ a");
    }

    #[test]
    fn variables_in_order_up_to_an_unclosed_placeholder() {
        let names: Vec<&str> = variables("{{ a }} x {{b}}{{ a }} {{ c").collect();
        assert_eq!(names, ["a", "b", "a"]);
        assert_eq!(variables("none").count(), 0);
    }
}
