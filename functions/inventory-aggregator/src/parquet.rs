//! A small, dependency-free Parquet writer for string tables: every column is an OPTIONAL
//! BYTE_ARRAY with the String logical type, one row group per file, one data page (v1) per
//! column, PLAIN values, definition levels in the RLE/bit-packed hybrid, UNCOMPRESSED, footer
//! in the Thrift compact protocol. Pure and deterministic: the same rows give the same bytes
//! (nothing depends on time, hashing order or the build), so retried runs rewrite identical
//! objects. The `parquet` crate would do this too, at a cost in binary size and build time
//! this function cannot afford.

use std::collections::HashMap;

/// Written as the file's `created_by`; constant so that bytes do not change between builds.
pub const CREATED_BY: &str = "ssm-autopilot inventory-aggregator";

const MAGIC: &[u8] = b"PAR1";

/// Min/max statistics longer than this are left out (they would bloat the footer; readers
/// treat absent statistics as "unknown").
const MAX_STAT_LEN: usize = 256;

// parquet.thrift enum values.
const TYPE_BYTE_ARRAY: i32 = 6;
const REPETITION_REQUIRED: i32 = 0;
const REPETITION_OPTIONAL: i32 = 1;
const CONVERTED_UTF8: i32 = 0;
const ENCODING_PLAIN: i32 = 0;
const ENCODING_RLE: i32 = 3;
const CODEC_UNCOMPRESSED: i32 = 0;
const PAGE_DATA: i32 = 0;

// Thrift compact protocol type ids.
const CT_I32: u8 = 5;
const CT_I64: u8 = 6;
const CT_BINARY: u8 = 8;
const CT_LIST: u8 = 9;
const CT_STRUCT: u8 = 12;

/// Unsigned LEB128, as Thrift compact and the RLE hybrid headers use.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// RLE/bit-packed hybrid encoding of 0/1 values (bit width 1), without the length prefix.
/// Runs of 8 or more equal values become RLE runs; the rest is bit-packed in groups of 8
/// (the last group zero-padded; readers stop at the page's value count).
pub fn rle_hybrid_bits(values: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut packed: Vec<u8> = Vec::new();
    let flush = |out: &mut Vec<u8>, packed: &mut Vec<u8>| {
        if !packed.is_empty() {
            varint(out, ((packed.len() as u64) << 1) | 1);
            out.append(packed);
        }
    };
    let mut i = 0;
    while i < values.len() {
        let v = values[i];
        let run = values[i..].iter().take_while(|x| **x == v).count();
        if run >= 8 {
            flush(&mut out, &mut packed);
            varint(&mut out, (run as u64) << 1);
            out.push(u8::from(v));
            i += run;
        } else {
            let group = &values[i..values.len().min(i + 8)];
            let byte = group
                .iter()
                .enumerate()
                .fold(0u8, |b, (bit, x)| b | (u8::from(*x) << bit));
            packed.push(byte);
            i += group.len();
        }
    }
    flush(&mut out, &mut packed);
    out
}

/// Thrift compact protocol writer (the subset the footer and page headers need).
#[derive(Default)]
struct Compact {
    out: Vec<u8>,
    /// Last field id per open struct (field headers carry deltas).
    last: Vec<i16>,
    current: i16,
}

impl Compact {
    fn field(&mut self, id: i16, ty: u8) {
        let delta = id - self.current;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | ty);
        } else {
            self.out.push(ty);
            varint(&mut self.out, zigzag(i64::from(id)));
        }
        self.current = id;
    }

    fn i32(&mut self, id: i16, v: i32) {
        self.field(id, CT_I32);
        varint(&mut self.out, zigzag(i64::from(v)));
    }

    fn i64(&mut self, id: i16, v: i64) {
        self.field(id, CT_I64);
        varint(&mut self.out, zigzag(v));
    }

    fn binary(&mut self, id: i16, v: &[u8]) {
        self.field(id, CT_BINARY);
        self.raw_binary(v);
    }

    fn raw_binary(&mut self, v: &[u8]) {
        varint(&mut self.out, v.len() as u64);
        self.out.extend_from_slice(v);
    }

    fn list(&mut self, id: i16, elem: u8, len: usize) {
        self.field(id, CT_LIST);
        self.list_header(elem, len);
    }

    fn list_header(&mut self, elem: u8, len: usize) {
        if len < 15 {
            self.out.push(((len as u8) << 4) | elem);
        } else {
            self.out.push(0xf0 | elem);
            varint(&mut self.out, len as u64);
        }
    }

    /// Opens a struct, as a field (`Some(id)`) or as a list element (`None`).
    fn begin(&mut self, id: Option<i16>) {
        if let Some(id) = id {
            self.field(id, CT_STRUCT);
        }
        self.last.push(self.current);
        self.current = 0;
    }

    fn end(&mut self) {
        self.out.push(0);
        self.current = self.last.pop().unwrap_or(0);
    }
}

struct Column {
    name: String,
    defined: Vec<bool>,
    /// PLAIN-encoded non-null values (4-byte little-endian length + bytes each).
    values: Vec<u8>,
    nulls: u64,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
}

impl Column {
    fn new(name: String, rows_before: usize) -> Self {
        Self {
            name,
            defined: vec![false; rows_before],
            values: Vec::new(),
            nulls: rows_before as u64,
            min: None,
            max: None,
        }
    }

    fn push(&mut self, v: Option<&str>) {
        match v {
            None => {
                self.defined.push(false);
                self.nulls += 1;
            }
            Some(s) => {
                self.defined.push(true);
                self.values
                    .extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.values.extend_from_slice(s.as_bytes());
                let b = s.as_bytes();
                if self.min.as_deref().is_none_or(|m| b < m) {
                    self.min = Some(b.to_vec());
                }
                if self.max.as_deref().is_none_or(|m| b > m) {
                    self.max = Some(b.to_vec());
                }
            }
        }
    }
}

/// A table of string cells built row by row, then written as one Parquet file.
pub struct Table {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    rows: usize,
    scratch: Vec<Option<usize>>,
}

impl Table {
    /// Columns in file order; names seen later in rows are appended in first-seen order.
    pub fn new<I: IntoIterator<Item = String>>(columns: I) -> Self {
        let mut t = Self {
            columns: Vec::new(),
            index: HashMap::new(),
            rows: 0,
            scratch: Vec::new(),
        };
        for c in columns {
            t.column(&c);
        }
        t
    }

    fn column(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.columns.len();
        self.columns.push(Column::new(name.to_owned(), self.rows));
        self.index.insert(name.to_owned(), i);
        i
    }

    /// Adds one row; columns the row does not name are null in it. A name given twice keeps
    /// its last value.
    pub fn push_row<'a, I: IntoIterator<Item = (&'a str, &'a str)>>(&mut self, cells: I) {
        let cells: Vec<(&str, &str)> = cells.into_iter().collect();
        self.scratch.clear();
        for (name, _) in &cells {
            self.column(name);
        }
        self.scratch.resize(self.columns.len(), None);
        for (i, (name, _)) in cells.iter().enumerate() {
            if let Some(c) = self.index.get(*name) {
                self.scratch[*c] = Some(i);
            }
        }
        for (c, col) in self.columns.iter_mut().enumerate() {
            col.push(self.scratch[c].map(|i| cells[i].1));
        }
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The whole file: `PAR1`, one column chunk per column, footer, footer length, `PAR1`.
    pub fn finish(self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut chunks = Vec::with_capacity(self.columns.len());
        for col in &self.columns {
            let offset = out.len() as i64;
            let levels = rle_hybrid_bits(&col.defined);
            let mut body = Vec::with_capacity(4 + levels.len() + col.values.len());
            body.extend_from_slice(&(levels.len() as u32).to_le_bytes());
            body.extend_from_slice(&levels);
            body.extend_from_slice(&col.values);
            let header = page_header(col.defined.len(), body.len());
            out.extend_from_slice(&header);
            out.extend_from_slice(&body);
            chunks.push((offset, (header.len() + body.len()) as i64));
        }
        let footer = file_metadata(&self.columns, self.rows, &chunks);
        out.extend_from_slice(&footer);
        out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        out.extend_from_slice(MAGIC);
        out
    }
}

fn page_header(num_values: usize, size: usize) -> Vec<u8> {
    let mut w = Compact::default();
    w.i32(1, PAGE_DATA);
    w.i32(2, size as i32);
    w.i32(3, size as i32);
    w.begin(Some(5)); // DataPageHeader
    w.i32(1, num_values as i32);
    w.i32(2, ENCODING_PLAIN);
    w.i32(3, ENCODING_RLE);
    w.i32(4, ENCODING_RLE);
    w.end();
    w.out.push(0);
    w.out
}

fn file_metadata(columns: &[Column], rows: usize, chunks: &[(i64, i64)]) -> Vec<u8> {
    let mut w = Compact::default();
    w.i32(1, 1); // version
    // Schema: the root group, then one leaf per column.
    w.list(2, CT_STRUCT, columns.len() + 1);
    w.begin(None);
    w.i32(3, REPETITION_REQUIRED);
    w.binary(4, b"schema");
    w.i32(5, columns.len() as i32);
    w.end();
    for c in columns {
        w.begin(None);
        w.i32(1, TYPE_BYTE_ARRAY);
        w.i32(3, REPETITION_OPTIONAL);
        w.binary(4, c.name.as_bytes());
        w.i32(6, CONVERTED_UTF8);
        w.begin(Some(10)); // LogicalType union: STRING (field 1, empty struct)
        w.begin(Some(1));
        w.end();
        w.end();
        w.end();
    }
    w.i64(3, rows as i64);
    w.list(4, CT_STRUCT, 1);
    w.begin(None); // RowGroup
    w.list(1, CT_STRUCT, columns.len());
    let total: i64 = chunks.iter().map(|(_, size)| size).sum();
    for (c, (offset, size)) in columns.iter().zip(chunks) {
        w.begin(None); // ColumnChunk
        w.i64(2, *offset);
        w.begin(Some(3)); // ColumnMetaData
        w.i32(1, TYPE_BYTE_ARRAY);
        w.list(2, CT_I32, 2);
        varint(&mut w.out, zigzag(i64::from(ENCODING_PLAIN)));
        varint(&mut w.out, zigzag(i64::from(ENCODING_RLE)));
        w.list(3, CT_BINARY, 1);
        w.raw_binary(c.name.as_bytes());
        w.i32(4, CODEC_UNCOMPRESSED);
        w.i64(5, c.defined.len() as i64);
        w.i64(6, *size);
        w.i64(7, *size);
        w.i64(9, *offset);
        w.begin(Some(12)); // Statistics
        w.i64(3, c.nulls as i64);
        if let (Some(min), Some(max)) = (&c.min, &c.max)
            && min.len() <= MAX_STAT_LEN
            && max.len() <= MAX_STAT_LEN
        {
            w.binary(5, max);
            w.binary(6, min);
        }
        w.end();
        w.end();
        w.end();
    }
    w.i64(2, total);
    w.i64(3, rows as i64);
    w.i64(5, chunks.first().map_or(4, |(o, _)| *o));
    w.i64(6, total);
    w.end();
    w.binary(6, CREATED_BY.as_bytes());
    // Column orders: TYPE_ORDER (unsigned byte-wise for strings), so readers trust min/max.
    w.list(7, CT_STRUCT, columns.len());
    for _ in columns {
        w.begin(None);
        w.begin(Some(1));
        w.end();
        w.end();
    }
    w.out.push(0);
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference decoder of the RLE/bit-packed hybrid (bit width 1).
    fn decode_bits(mut b: &[u8], n: usize) -> Vec<bool> {
        fn read_varint(b: &mut &[u8]) -> u64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while out.len() < n {
            let h = read_varint(&mut b);
            if h & 1 == 1 {
                for _ in 0..(h >> 1) {
                    let byte = b[0];
                    b = &b[1..];
                    out.extend((0..8).map(|bit| byte >> bit & 1 == 1));
                }
            } else {
                let v = b[0] == 1;
                b = &b[1..];
                out.extend(std::iter::repeat_n(v, (h >> 1) as usize));
            }
        }
        assert!(b.is_empty(), "trailing bytes");
        out.truncate(n);
        out
    }

    #[test]
    fn varints_are_leb128() {
        let enc = |v| {
            let mut o = Vec::new();
            varint(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }

    #[test]
    fn zigzag_interleaves_signs() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(-2), 3);
        assert_eq!(zigzag(2147483647), 4294967294);
        assert_eq!(zigzag(-2147483648), 4294967295);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn rle_hybrid_uses_runs_and_bit_packing() {
        // 8 equal values: one RLE run (header 8<<1, value byte).
        assert_eq!(rle_hybrid_bits(&[true; 8]), [0x10, 0x01]);
        assert_eq!(rle_hybrid_bits(&[false; 300]), [0xd8, 0x04, 0x00]);
        // Alternating: one bit-packed group, LSB first.
        let alt: Vec<bool> = (0..8).map(|i| i % 2 == 0).collect();
        assert_eq!(rle_hybrid_bits(&alt), [0x03, 0x55]);
        // A short tail is padded to a whole group.
        assert_eq!(rle_hybrid_bits(&[true, true, false]), [0x03, 0x03]);
        assert!(rle_hybrid_bits(&[]).is_empty());
        // Mixed: packed, then a run, then packed; decodes back exactly.
        let mut mixed: Vec<bool> = (0..13).map(|i| i % 3 == 0).collect();
        mixed.extend([true; 20]);
        mixed.extend((0..5).map(|i| i % 2 == 1));
        let enc = rle_hybrid_bits(&mixed);
        assert_eq!(decode_bits(&enc, mixed.len()), mixed);
        for n in [1, 7, 8, 9, 15, 16, 17, 64, 1000] {
            let v: Vec<bool> = (0..n).map(|i| (i * 7 + i / 11) % 5 < 2).collect();
            assert_eq!(decode_bits(&rle_hybrid_bits(&v), n), v, "n={n}");
        }
    }

    #[test]
    fn compact_field_headers_use_deltas_and_long_form() {
        let mut w = Compact::default();
        w.i32(1, 3);
        w.i32(17, -1); // delta 16: long form, zigzag i16 id
        w.begin(Some(18));
        w.i64(1, 1);
        w.end();
        w.list(19, CT_I32, 2);
        varint(&mut w.out, zigzag(5));
        varint(&mut w.out, zigzag(6));
        assert_eq!(
            w.out,
            [
                0x15, 0x06, 0x05, 0x22, 0x01, 0x1c, 0x16, 0x02, 0x00, 0x19, 0x25, 0x0a, 0x0c
            ]
        );
    }

    #[test]
    fn files_are_deterministic_and_framed() {
        let build = || {
            let mut t = Table::new(["Name".to_owned(), "Version".to_owned()]);
            t.push_row([("Name", "curl"), ("Version", "8.1")]);
            t.push_row([("Name", "git"), ("Extra", "x")]);
            t.push_row([]);
            t
        };
        let t = build();
        assert_eq!(t.column_names(), ["Name", "Version", "Extra"]);
        assert_eq!(t.rows(), 3);
        let a = t.finish();
        assert_eq!(a, build().finish());
        assert_eq!(&a[..4], MAGIC);
        assert_eq!(&a[a.len() - 4..], MAGIC);
        let footer_len = u32::from_le_bytes(a[a.len() - 8..a.len() - 4].try_into().unwrap());
        assert!((footer_len as usize) < a.len() - 12);
        let mut other = Table::new(["Name".to_owned(), "Version".to_owned()]);
        other.push_row([("Name", "curl"), ("Version", "8.2")]);
        assert_ne!(a, other.finish());
    }
}
