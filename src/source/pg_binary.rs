//! Decoder of PostgreSQL's binary `COPY ... TO STDOUT (FORMAT binary)` stream
//! straight into Arrow record batches: no text parsing, no per-row allocation.
//!
//! The stream is: an 11-byte signature, flags, a header extension, then one
//! tuple per row (`int16` field count, then per field an `int32` length, -1
//! for NULL, and the value in network byte order), ended by a `-1` count.
//! Chunks may split a tuple anywhere; the decoder keeps the unfinished tail.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::columns::{arrow_schema, ColumnBuilder, ColumnSpec, ColumnType};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between the same two epochs.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A malformed stream or a value that does not fit its column.
#[derive(Debug, thiserror::Error)]
#[error("binary COPY stream: {0}")]
pub struct DecodeError(String);

/// Incremental decoder: `feed` chunks, collect the batches it returns, then
/// `finish`.
pub struct BinaryCopyDecoder {
    columns: Vec<ColumnSpec>,
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    batch_rows: usize,
    pending: Vec<u8>,
    header_seen: bool,
    trailer_seen: bool,
    rows: u64,
}

impl BinaryCopyDecoder {
    pub fn new(columns: Vec<ColumnSpec>, batch_rows: usize) -> Self {
        let schema = arrow_schema(&columns);
        let builders = columns.iter().map(|c| ColumnBuilder::new(c.column_type, batch_rows)).collect();
        BinaryCopyDecoder {
            columns,
            schema,
            builders,
            batch_rows,
            pending: Vec::new(),
            header_seen: false,
            trailer_seen: false,
            rows: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Decodes every complete tuple of `chunk` (plus what was pending).
    /// Returns the batches that filled up.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>, DecodeError> {
        let mut out = Vec::new();
        if self.pending.is_empty() {
            let used = self.decode_buffer(chunk, &mut out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let buffer = std::mem::take(&mut self.pending);
            let used = self.decode_buffer(&buffer, &mut out)?;
            self.pending = buffer[used..].to_vec();
        }
        Ok(out)
    }

    /// Ends the stream: checks the trailer and returns the last batch.
    pub fn finish(mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if !self.trailer_seen {
            return Err(DecodeError("stream ended before the trailer (connection lost?)".into()));
        }
        if self.builders.first().is_some_and(|b| b.is_empty()) {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    fn flush(&mut self) -> Result<RecordBatch, DecodeError> {
        let arrays = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| DecodeError(e.to_string()))
    }

    /// Decodes complete tuples from `buf`; returns how many bytes were used.
    fn decode_buffer(&mut self, buf: &[u8], out: &mut Vec<RecordBatch>) -> Result<usize, DecodeError> {
        let mut pos = 0;
        if !self.header_seen {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(DecodeError("missing PGCOPY signature".into()));
            }
            let extension = be_i32(&buf[15..19]) as usize;
            if buf.len() < 19 + extension {
                return Ok(0);
            }
            pos = 19 + extension;
            self.header_seen = true;
        }
        while !self.trailer_seen {
            let Some(tuple_len) = self.complete_tuple_len(&buf[pos..])? else { break };
            let tuple = &buf[pos..pos + tuple_len];
            pos += tuple_len;
            let count = be_i16(&tuple[..2]);
            if count == -1 {
                self.trailer_seen = true;
                break;
            }
            self.decode_tuple(&tuple[2..])?;
            self.rows += 1;
            if self.builders[0].len() >= self.batch_rows {
                out.push(self.flush()?);
            }
        }
        Ok(pos)
    }

    /// Length of the tuple at the start of `buf` if it is complete.
    fn complete_tuple_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let count = be_i16(&buf[..2]);
        if count == -1 {
            return Ok(Some(2));
        }
        if count as usize != self.columns.len() {
            return Err(DecodeError(format!("tuple has {count} fields, expected {}", self.columns.len())));
        }
        let mut pos = 2;
        for _ in 0..count {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = be_i32(&buf[pos..pos + 4]);
            pos += 4;
            if len > 0 {
                pos += len as usize;
            }
        }
        Ok((buf.len() >= pos).then_some(pos))
    }

    fn decode_tuple(&mut self, mut buf: &[u8]) -> Result<(), DecodeError> {
        for (index, builder) in self.builders.iter_mut().enumerate() {
            let len = be_i32(&buf[..4]);
            buf = &buf[4..];
            if len < 0 {
                builder.append_null();
                continue;
            }
            let (value, rest) = buf.split_at(len as usize);
            buf = rest;
            append_value(builder, value).map_err(|reason| {
                DecodeError(format!("column {}: {reason}", self.columns[index].name))
            })?;
        }
        Ok(())
    }
}

fn append_value(builder: &mut ColumnBuilder, v: &[u8]) -> Result<(), String> {
    let expect = |n: usize| if v.len() == n { Ok(()) } else { Err(format!("expected {n} bytes, got {}", v.len())) };
    match builder {
        ColumnBuilder::Int16(b) => {
            expect(2)?;
            b.append_value(be_i16(v));
        }
        ColumnBuilder::Int32(b) => {
            expect(4)?;
            b.append_value(be_i32(v));
        }
        ColumnBuilder::Int64(b) => {
            expect(8)?;
            b.append_value(be_i64(v));
        }
        ColumnBuilder::Float32(b) => {
            expect(4)?;
            b.append_value(f32::from_bits(be_i32(v) as u32));
        }
        ColumnBuilder::Float64(b) => {
            expect(8)?;
            b.append_value(f64::from_bits(be_i64(v) as u64));
        }
        ColumnBuilder::Bool(b) => {
            expect(1)?;
            b.append_value(v[0] != 0);
        }
        ColumnBuilder::Text(b) => {
            b.append_value(std::str::from_utf8(v).map_err(|_| "text is not valid UTF-8".to_string())?);
        }
        ColumnBuilder::Bytea(b) => b.append_value(v),
        ColumnBuilder::Date(b) => {
            expect(4)?;
            let days = be_i32(v);
            // ±infinity are i32::MAX / i32::MIN: kept as NULL (no Arrow equivalent).
            if days == i32::MAX || days == i32::MIN {
                b.append_null();
            } else {
                b.append_value(days + PG_EPOCH_DAYS);
            }
        }
        ColumnBuilder::Timestamp(b, _) => {
            expect(8)?;
            let micros = be_i64(v);
            if micros == i64::MAX || micros == i64::MIN {
                b.append_null();
            } else {
                b.append_value(micros + PG_EPOCH_MICROS);
            }
        }
        ColumnBuilder::Numeric(b, _, scale) => match decode_numeric(v, *scale)? {
            Some(value) => b.append_value(value),
            None => b.append_null(),
        },
    }
    Ok(())
}

/// Decodes a binary `numeric` into an unscaled i128 at `scale` (extra
/// fractional digits are rounded half away from zero). NaN becomes `None`.
pub fn decode_numeric(v: &[u8], scale: i8) -> Result<Option<i128>, String> {
    if v.len() < 8 {
        return Err("numeric header too short".into());
    }
    let ndigits = be_i16(&v[0..2]) as usize;
    let weight = be_i16(&v[2..4]) as i32;
    let sign = be_i16(&v[4..6]) as u16;
    if sign == 0xC000 || sign == 0xD000 || sign == 0xF000 {
        return Ok(None); // NaN, +inf, -inf
    }
    if v.len() != 8 + 2 * ndigits {
        return Err("numeric digit count does not match its length".into());
    }
    // value = Σ digit_i · 10000^(weight − i); unscaled = value · 10^scale.
    // Accumulate with one extra decimal digit for rounding.
    let scale = scale as i32 + 1;
    let mut unscaled: i128 = 0;
    for i in 0..ndigits {
        let digit = be_i16(&v[8 + 2 * i..10 + 2 * i]) as i128;
        let exponent = 4 * (weight - i as i32) + scale;
        let term = if exponent >= 0 {
            digit.checked_mul(10i128.checked_pow(exponent as u32).ok_or("numeric value too large")?)
        } else if exponent > -5 {
            Some(digit / 10i128.pow((-exponent) as u32))
        } else {
            Some(0)
        };
        unscaled = unscaled.checked_add(term.ok_or("numeric value too large")?).ok_or("numeric value too large")?;
    }
    let rounded = (unscaled + 5) / 10;
    Ok(Some(if sign == 0x4000 { -rounded } else { rounded }))
}

/// The `COPY` column expression for a column: native types as they are,
/// others cast to text so they can be read as Utf8.
pub fn copy_expression(column: &ColumnSpec) -> String {
    let quoted = format!("\"{}\"", column.name.replace('"', "\"\""));
    if column.column_type == ColumnType::AsText {
        format!("{quoted}::text")
    } else {
        quoted
    }
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}
fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int16Array, StringArray};

    fn header() -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v
    }

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(bytes) => {
                    v.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    v.extend_from_slice(bytes);
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        v
    }

    fn spec(name: &str, t: ColumnType) -> ColumnSpec {
        ColumnSpec { name: name.into(), column_type: t, nullable: true }
    }

    #[test]
    fn decodes_rows_split_across_chunks() {
        let mut stream = header();
        stream.extend(tuple(&[Some(&7i16.to_be_bytes()), Some(b"Chai")]));
        stream.extend(tuple(&[None, None]));
        stream.extend((-1i16).to_be_bytes());
        let columns = vec![spec("id", ColumnType::Int16), spec("name", ColumnType::Text)];
        let mut decoder = BinaryCopyDecoder::new(columns, 1024);
        // Feed one byte at a time: the worst possible chunking.
        for byte in &stream {
            assert!(decoder.feed(std::slice::from_ref(byte)).unwrap().is_empty());
        }
        let batch = decoder.finish().unwrap().unwrap();
        let ids = batch.column(0).as_any().downcast_ref::<Int16Array>().unwrap();
        let names = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(ids.value(0), 7);
        assert!(ids.is_null(1));
        assert_eq!(names.value(0), "Chai");
        assert!(names.is_null(1));
    }

    #[test]
    fn missing_trailer_is_an_error() {
        let mut decoder = BinaryCopyDecoder::new(vec![spec("id", ColumnType::Int16)], 8);
        decoder.feed(&header()).unwrap();
        assert!(decoder.finish().is_err());
    }

    fn numeric(weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_values() {
        // 12345.678 = [1, 2345, 6780], weight 1
        assert_eq!(decode_numeric(&numeric(1, 0, 3, &[1, 2345, 6780]), 3).unwrap(), Some(12_345_678));
        // -0.05 = [500], weight -1, scale 2 → -5
        assert_eq!(decode_numeric(&numeric(-1, 0x4000, 2, &[500]), 2).unwrap(), Some(-5));
        // 2.5 at scale 0 rounds away from zero → 3
        assert_eq!(decode_numeric(&numeric(0, 0, 1, &[2, 5000]), 0).unwrap(), Some(3));
        assert_eq!(decode_numeric(&numeric(0, 0xC000, 0, &[]), 2).unwrap(), None);
    }
}
