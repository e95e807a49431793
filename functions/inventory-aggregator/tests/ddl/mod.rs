//! A small structural parser of the Athena DDL in `athena/` (CREATE EXTERNAL TABLE with
//! partition projection), and a matcher of S3 keys against `storage.location.template`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub columns: Vec<(String, String)>,
    pub partitions: Vec<String>,
    pub location: String,
    pub props: BTreeMap<String, String>,
    /// `json` (JsonSerDe) or `parquet` (STORED AS PARQUET).
    pub stored_as: String,
}

pub fn athena_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../athena")
}

/// Splits on commas outside `<...>`, `(...)`.
fn split_top(s: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0i32, String::new(), Vec::new());
    for c in s.chars() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The text inside the parenthesis group starting at `open` (index of `(`), quotes respected.
fn group(s: &str, open: usize) -> (String, usize) {
    let (mut depth, mut quoted) = (0, false);
    for (i, c) in s[open..].char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return (s[open + 1..open + i].to_owned(), open + i + 1);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parenthesis");
}

fn split_props(s: &str) -> Vec<String> {
    let (mut quoted, mut cur, mut out) = (false, String::new(), Vec::new());
    for c in s.chars() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == ',' && !quoted {
            out.push(cur.trim().to_owned());
            cur.clear();
            continue;
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

pub fn parse(sql: &str) -> Vec<Table> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut tables = Vec::new();
    for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let upper = stmt.to_ascii_uppercase();
        assert!(
            upper.starts_with("CREATE EXTERNAL TABLE"),
            "not a CREATE EXTERNAL TABLE: {stmt}"
        );
        let head_end = stmt.find('(').expect("column list");
        let name = stmt[..head_end]
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned();
        let (cols, after_cols) = group(stmt, head_end);
        let columns = split_top(&cols)
            .into_iter()
            .map(|c| {
                let (n, t) = c.split_once(char::is_whitespace).expect("column type");
                (
                    n.trim_matches('`').to_ascii_lowercase(),
                    t.trim().to_owned(),
                )
            })
            .collect();
        let rest = &stmt[after_cols..];
        let rest_upper = rest.to_ascii_uppercase();
        let p = rest_upper.find("PARTITIONED BY").expect("PARTITIONED BY");
        let p_open = p + rest[p..].find('(').unwrap();
        let (parts, _) = group(rest, p_open);
        let partitions = split_top(&parts)
            .into_iter()
            .map(|c| c.split_whitespace().next().unwrap().to_ascii_lowercase())
            .collect();
        let stored_as =
            if rest_upper.contains("ROW FORMAT SERDE 'ORG.OPENX.DATA.JSONSERDE.JSONSERDE'") {
                "json"
            } else if rest_upper.contains("STORED AS PARQUET") {
                "parquet"
            } else {
                panic!("{name}: neither JsonSerDe nor STORED AS PARQUET")
            };
        let l = rest_upper.find("LOCATION '").expect("LOCATION");
        let loc_start = l + "LOCATION '".len();
        let location =
            rest[loc_start..loc_start + rest[loc_start..].find('\'').unwrap()].to_owned();
        let t = rest_upper.find("TBLPROPERTIES").expect("TBLPROPERTIES");
        let t_open = t + rest[t..].find('(').unwrap();
        let (props_text, _) = group(rest, t_open);
        let props = split_props(&props_text)
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("property");
                (
                    k.trim().trim_matches('\'').to_owned(),
                    v.trim().trim_matches('\'').to_owned(),
                )
            })
            .collect();
        tables.push(Table {
            name,
            columns,
            partitions,
            location,
            props,
            stored_as: stored_as.to_owned(),
        });
    }
    tables
}

/// The tables of the JSON outputs (always written).
pub fn load_all() -> Vec<Table> {
    load(&["resource_data_sync.sql", "snapshots.sql", "runs.sql"])
}

/// The tables of the Parquet snapshots (`OUTPUT_FORMATS=json,parquet`).
pub fn load_parquet() -> Vec<Table> {
    load(&["snapshots_parquet.sql"])
}

fn load(files: &[&str]) -> Vec<Table> {
    let mut out = Vec::new();
    for f in files {
        let sql = std::fs::read_to_string(athena_dir().join(f)).unwrap();
        out.extend(parse(&sql));
    }
    out
}

pub fn substitute(s: &str, bucket: &str, prefix: &str, accounts: &str, regions: &str) -> String {
    s.replace("<BUCKET>", bucket)
        .replace("<PREFIX>", prefix)
        .replace("<ACCOUNT_IDS>", accounts)
        .replace("<REGIONS>", regions)
}

/// The partition values `key_url` maps to under the table's `storage.location.template`, or
/// `None` when the key is not under it.
pub fn match_key(t: &Table, key_url: &str) -> Option<BTreeMap<String, String>> {
    let template = t.props.get("storage.location.template")?;
    let mut values = BTreeMap::new();
    let (mut rest_t, mut rest_k) = (template.as_str(), key_url);
    loop {
        match rest_t.find("${") {
            None => return rest_k.starts_with(rest_t).then_some(values),
            Some(i) => {
                rest_k = rest_k.strip_prefix(&rest_t[..i])?;
                let end = rest_t[i..].find('}')? + i;
                let col = &rest_t[i + 2..end];
                let v_end = rest_k.find('/').unwrap_or(rest_k.len());
                values.insert(col.to_owned(), rest_k[..v_end].to_owned());
                rest_k = &rest_k[v_end..];
                rest_t = &rest_t[end + 1..];
            }
        }
    }
}

/// Whether `value` is a value the column's projection produces.
pub fn projected(t: &Table, col: &str, value: &str) -> bool {
    match t
        .props
        .get(&format!("projection.{col}.type"))
        .map(String::as_str)
    {
        Some("enum") => t.props[&format!("projection.{col}.values")]
            .split(',')
            .any(|v| v.trim() == value),
        Some("date") => {
            assert_eq!(t.props[&format!("projection.{col}.format")], "yyyy-MM-dd");
            chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
        }
        _ => false,
    }
}

/// Structural checks every table must pass.
pub fn check_structure(t: &Table) {
    assert_eq!(
        t.props.get("projection.enabled").map(String::as_str),
        Some("true"),
        "{}",
        t.name
    );
    let template = &t.props["storage.location.template"];
    assert!(
        template.starts_with(t.location.as_str()),
        "{}: template under LOCATION",
        t.name
    );
    for p in &t.partitions {
        assert!(
            template.contains(&format!("${{{p}}}")),
            "{}: template lacks ${{{p}}}",
            t.name
        );
        assert!(
            t.props.contains_key(&format!("projection.{p}.type")),
            "{}: no projection for {p}",
            t.name
        );
        assert!(
            !t.columns.iter().any(|(c, _)| c == p),
            "{}: partition {p} is also a column",
            t.name
        );
    }
    if t.name.starts_with("aws_") || t.name.starts_with("inventory_snapshot") {
        assert!(
            t.columns.iter().any(|(n, _)| n == "resourceid"),
            "{}: no resourceid",
            t.name
        );
    }
}
