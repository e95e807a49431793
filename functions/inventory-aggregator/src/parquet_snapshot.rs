//! Parquet snapshot files (`OUTPUT_FORMATS=json,parquet`): each file holds `parts_per_file`
//! consecutive JSON snapshot parts of one type, read back from S3 one part at a time. Built from
//! the JSON parts (not from the pages in flight) so the Parquet rows are exactly the JSON rows,
//! a file can span pages collected by different invocations, and a redone page rewrites the
//! same bytes (the parts are deterministic, and so is the encoder).

use std::borrow::Cow;

use serde_json::Value;

use crate::config::ParquetOutput;
use crate::error::InventoryError;
use crate::handler::Deps;
use crate::layout::Scope;
use crate::parquet::Table;
use crate::plan::TypeCursor;
use crate::run::read_part;

pub const CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// Columns every snapshot row carries besides the type's attributes (see `layout::snapshot_row`).
pub const ROW_COLUMNS: [&str; 6] = [
    "resourceId",
    "captureTime",
    "schemaVersion",
    "accountId",
    "region",
    "runId",
];

/// File columns: the schema's attributes in its order, then the row columns. Attributes a
/// node reports beyond its schema still land in the file, as trailing columns.
pub fn columns_for(attributes: &[String]) -> Vec<String> {
    let mut cols: Vec<String> = attributes.to_vec();
    for c in ROW_COLUMNS {
        if !cols.iter().any(|a| a == c) {
            cols.push(c.to_owned());
        }
    }
    cols
}

/// Number of files due once `parts` parts exist: only whole groups while the type is still
/// being collected, the remainder too once it is done.
pub fn files_due(parts: u32, done: bool, out: ParquetOutput) -> u32 {
    if done {
        parts.div_ceil(out.parts_per_file)
    } else {
        parts / out.parts_per_file
    }
}

/// Writes the files that became due with the page just collected; call before the cursor
/// is checkpointed, so that a page redone after a crash redoes its file too.
pub async fn after_page(
    deps: &Deps,
    scope: &Scope,
    type_name: &str,
    cursor: &mut TypeCursor,
    out: ParquetOutput,
) -> Result<(), InventoryError> {
    let due = files_due(cursor.parts, cursor.done, out);
    if cursor.parquet_files >= due {
        return Ok(());
    }
    let columns = match &cursor.parquet_columns {
        Some(c) => c.clone(),
        None => {
            let c = columns_for(&deps.inventory.attributes(type_name).await?);
            cursor.parquet_columns = Some(c.clone());
            c
        }
    };
    while cursor.parquet_files < due {
        let file = cursor.parquet_files;
        let first = file * out.parts_per_file;
        let end = first.saturating_add(out.parts_per_file).min(cursor.parts);
        let mut table = Table::new(columns.iter().cloned());
        for part in first..end {
            for row in read_part(deps, &scope.snapshot_part_key(type_name, part)).await? {
                let cells: Vec<(&str, Cow<'_, str>)> = row
                    .iter()
                    .filter_map(|(k, v)| match v {
                        Value::Null => None,
                        Value::String(s) => Some((k.as_str(), Cow::Borrowed(s.as_str()))),
                        other => Some((k.as_str(), Cow::Owned(other.to_string()))),
                    })
                    .collect();
                table.push_row(cells.iter().map(|(k, v)| (*k, v.as_ref())));
            }
        }
        tracing::debug!(type_name, file, rows = table.rows(), "parquet file");
        deps.store
            .put_as(
                &scope.snapshot_parquet_key(type_name, file),
                table.finish(),
                CONTENT_TYPE,
            )
            .await?;
        cursor.parquet_files += 1;
    }
    Ok(())
}

/// Keys of a type's Parquet files, for the manifest.
pub fn keys(scope: &Scope, type_name: &str, files: u32) -> Vec<String> {
    (0..files)
        .map(|f| scope.snapshot_parquet_key(type_name, f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_group_parts_and_flush_the_rest_when_done() {
        let out = ParquetOutput { parts_per_file: 3 };
        assert_eq!(files_due(0, false, out), 0);
        assert_eq!(files_due(2, false, out), 0);
        assert_eq!(files_due(3, false, out), 1);
        assert_eq!(files_due(7, false, out), 2);
        assert_eq!(files_due(7, true, out), 3);
        assert_eq!(files_due(6, true, out), 2);
        assert_eq!(files_due(0, true, out), 0);
    }

    #[test]
    fn columns_are_schema_then_row_columns() {
        let c = columns_for(&["Name".into(), "resourceId".into()]);
        assert_eq!(
            c,
            [
                "Name",
                "resourceId",
                "captureTime",
                "schemaVersion",
                "accountId",
                "region",
                "runId"
            ]
        );
    }
}
