#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Parquet encoder's files, read back with pyarrow: every cell, the schema, the
//! statistics, and byte-identical output for identical input.

mod pyarrow;

use inventory_aggregator::parquet::{CREATED_BY, Table};

/// Deterministic, awkward rows: nulls in runs and scattered, empty strings, multi-byte UTF-8,
/// long values (beyond the statistics cap), a column that first appears mid-file.
fn source_rows(n: usize) -> Vec<Vec<(String, String)>> {
    (0..n)
        .map(|i| {
            let mut row = vec![("resourceId".to_owned(), format!("i-{:017x}", i / 7))];
            if i % 3 != 0 {
                row.push(("Name".into(), format!("pkg-{i}-ünïcødé-名前")));
            }
            if !(100..140).contains(&i) {
                row.push(("Version".into(), format!("{}.{}.{}", i % 5, i % 11, i)));
            }
            if i % 17 == 0 {
                row.push(("Summary".into(), String::new()));
            }
            if i == 5 {
                row.push(("Summary".into(), "x".repeat(300)));
            }
            if i >= n / 2 && i % 2 == 0 {
                row.push(("LateColumn".into(), format!("late {i}")));
            }
            row
        })
        .collect()
}

fn build(rows: &[Vec<(String, String)>]) -> Vec<u8> {
    let mut t = Table::new(["Name", "Version", "Summary", "resourceId"].map(String::from));
    for r in rows {
        t.push_row(r.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    assert_eq!(t.rows(), rows.len());
    t.finish()
}

fn expected(row: &[(String, String)], col: &str) -> Option<String> {
    row.iter()
        .rev()
        .find(|(k, _)| k == col)
        .map(|(_, v)| v.clone())
}

#[test]
fn pyarrow_reads_back_every_cell() {
    let sizes = [1usize, 9, 2_500];
    let sources: Vec<_> = sizes.iter().map(|n| source_rows(*n)).collect();
    let files: Vec<Vec<u8>> = sources.iter().map(|r| build(r)).collect();
    let read = pyarrow::read(&files);
    assert_eq!(read.len(), sizes.len());
    for ((source, file), n) in sources.iter().zip(&read).zip(sizes) {
        assert_eq!(file["num_rows"], n);
        assert_eq!(file["row_groups"], 1);
        assert_eq!(file["created_by"], CREATED_BY);
        let names: Vec<&str> = file["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["Name", "Version", "Summary", "resourceId", "LateColumn"]
        );
        for c in file["columns"].as_array().unwrap() {
            assert_eq!(c["physical"], "BYTE_ARRAY");
            assert_eq!(c["logical"], "String");
            assert_eq!(c["max_definition_level"], 1);
            assert_eq!(c["arrow"], "string");
        }
        let rows = pyarrow::rows(file);
        assert_eq!(rows.len(), source.len());
        for (i, (got, src)) in rows.iter().zip(source).enumerate() {
            assert_eq!(got.len(), names.len());
            for (col, value) in got {
                assert_eq!(*value, expected(src, col), "row {i} column {col}");
            }
        }
        // Statistics agree with the data (readers prune on them).
        for (ci, c) in file["columns"].as_array().unwrap().iter().enumerate() {
            let values: Vec<String> = rows.iter().filter_map(|r| r[ci].1.clone()).collect();
            assert_eq!(c["null_count"], (rows.len() - values.len()) as u64);
            let (min, max) = (values.iter().min(), values.iter().max());
            if max.is_some_and(|m| m.len() > 256) {
                assert!(c["max"].is_null(), "long values carry no min/max");
            } else {
                assert_eq!(c["min"].as_str(), min.map(String::as_str), "{}", c["name"]);
                assert_eq!(c["max"].as_str(), max.map(String::as_str), "{}", c["name"]);
            }
        }
    }
}

#[test]
fn identical_rows_give_identical_bytes() {
    let rows = source_rows(1_000);
    let a = build(&rows);
    assert_eq!(a, build(&rows));
    let mut changed = rows.clone();
    changed[999][0].1.push('x');
    assert_ne!(a, build(&changed));
}
