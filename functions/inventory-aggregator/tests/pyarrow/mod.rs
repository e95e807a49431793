//! Reads Parquet files back with a real reader: pyarrow, from the emulator's venv (pinned in
//! `tests/emulator/requirements.txt`; the venv is prepared when the emulator starts).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const READER: &str = r#"
import json, sys
import pyarrow.parquet as pq
out = []
for path in sys.argv[1:]:
    f = pq.ParquetFile(path)
    table = f.read()
    table.validate(full=True)
    md = f.metadata
    cols = []
    for i in range(md.num_columns):
        leaf = f.schema.column(i)
        stats = md.row_group(0).column(i).statistics if md.num_row_groups else None
        cols.append({
            "name": leaf.name,
            "physical": leaf.physical_type,
            "logical": str(leaf.logical_type),
            "max_definition_level": leaf.max_definition_level,
            "arrow": str(table.schema.field(i).type),
            "null_count": stats.null_count if stats is not None else None,
            "min": stats.min if stats is not None and stats.has_min_max else None,
            "max": stats.max if stats is not None and stats.has_min_max else None,
        })
    out.append({
        "num_rows": md.num_rows,
        "row_groups": md.num_row_groups,
        "created_by": md.created_by,
        "columns": cols,
        # Rows as [column, value] pairs in file column order.
        "rows": [[[c, r[c]] for c in table.column_names] for r in table.to_pylist()],
    })
print(json.dumps(out))
"#;

fn python() -> PathBuf {
    // The venv exists once an emulator has started (ours, or the one AUTOPILOT_EMULATOR_URL names).
    autopilot_harness::emulator::shared_endpoint().unwrap();
    let venv = std::env::var("AUTOPILOT_EMULATOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| autopilot_harness::emulator::repo_root().join("target/emulator-venv"));
    venv.join("bin/python")
}

/// One JSON document per file: metadata, per-column facts and the rows.
pub fn read(files: &[Vec<u8>]) -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("parquet-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let p = dir.join(format!("{i:05}.parquet"));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    let out = Command::new(python())
        .arg("-c")
        .arg(READER)
        .args(&paths)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "pyarrow could not read the files:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A row as (column, value) pairs, nulls included.
pub fn rows(file: &Value) -> Vec<Vec<(String, Option<String>)>> {
    file["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|cell| {
                    (
                        cell[0].as_str().unwrap().to_owned(),
                        cell[1].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .collect()
}
