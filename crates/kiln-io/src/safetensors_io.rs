//! safetensors files to and from named [`Array`]s.
//!
//! The format: an 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON mapping each
//! tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (plus an optional
//! `"__metadata__"` string map), then the data, every tensor's bytes little-endian row-major at
//! its offsets (relative to the end of the header), with no holes and nothing after the last.
//!
//! Every header is checked here before any tensor is read ([`parse_header`]); the
//! `safetensors` crate then hands out the tensors' byte ranges.

use crate::atomic::write_atomically;
use kiln_tensor::{Array, ByteOwner, DType, Error, ExternalF32, Result};
use memmap2::Mmap;
use safetensors::SafeTensors;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The element types of the safetensors format (the `safetensors` crate's).
pub use safetensors::Dtype;

/// The longest header accepted, in bytes (the `safetensors` crate's limit).
pub const MAX_HEADER_LEN: usize = 100_000_000;

/// One tensor's entry in a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Its element type as stored.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its bytes, `begin..end`, relative to the start of the data (after the header).
    pub data_offsets: (usize, usize),
}

impl TensorInfo {
    /// The number of elements (the product of the shape, which [`parse_header`] checked does
    /// not overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A checked safetensors header.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Every tensor, in the order of their data.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map (empty when absent).
    pub metadata: BTreeMap<String, String>,
    /// The length of the JSON header in bytes.
    pub header_len: usize,
    /// The length of the data after the header in bytes.
    pub data_len: usize,
}

/// The tensors and the metadata of a safetensors file.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Every tensor by name (see [`load_safetensors`] for the dtype conversions).
    pub tensors: BTreeMap<String, Array>,
    /// The `__metadata__` string map (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------- reading

/// Reads every tensor of a safetensors file. The file is memory-mapped; F32 tensors whose
/// bytes are 4-byte aligned in the file (every file kiln or the reference writer produces, on
/// a little-endian host) are not copied: their arrays read the mapping in place
/// ([`Array::from_external_f32`]) and keep it alive as long as any of them (or a view of one)
/// lives. Writing such an array in place (an optimizer step, [`Array::make_mut_f32`]) first
/// copies it into process memory (copy-on-write): the file is never written. Other tensors are
/// converted from the mapping into their own arrays. [`load_safetensors_copied`] copies every
/// tensor instead (see docs/io.md for the trade-off). Element types:
///
/// * F32 is kept; F64, F16, BF16, F8_E5M2 and F8_E4M3 (the `e4m3fn` variant) are converted to
///   f32 (F64 rounds to nearest; the others are exact);
/// * I64 is kept; I32, I16, I8, U32 and U16 become i64 (exact); U64 becomes i64 and is an
///   error if a value exceeds `i64::MAX`;
/// * U8 and BOOL become U8.
///
/// A malformed file is an [`Error::Format`] naming the file and the problem (see
/// [`parse_header`] for what is checked); nothing of a size read from the file is allocated
/// before it is checked against the file's length.
///
/// The file must not be modified in place or truncated by another process while tensors
/// loaded from it live (a memory map sees such changes; truncation makes reads fault).
/// Replacing it by a rename, as kiln's own writers do, is safe: the mapping keeps the old file.
///
/// ```
/// use kiln_io::{load_safetensors, save_safetensors};
/// use kiln_tensor::Array;
/// let dir = std::env::temp_dir().join(format!("kiln-io-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("weights.safetensors");
/// let w = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let ids = Array::from_vec(vec![7i64, -1], &[2])?;
/// save_safetensors(&path, [("fc.weight", &w), ("ids", &ids)], None)?;
/// let back = load_safetensors(&path)?;
/// assert_eq!(back["fc.weight"].shape(), &[2, 3]);
/// assert_eq!(back["fc.weight"].to_vec_f32()?, w.to_vec_f32()?);
/// assert_eq!(back["ids"].to_vec::<i64>()?, vec![7, -1]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Array>> {
    Ok(read_safetensors(path)?.tensors)
}

/// [`load_safetensors`] that also returns the file's metadata.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Loaded> {
    let path = path.as_ref();
    let map: ByteOwner = Arc::new(map_file(path)?);
    read_tensors((*map).as_ref(), Some(&map), &path.display().to_string())
}

/// [`load_safetensors`] that copies every tensor into process memory: the arrays do not keep
/// the file mapped, and the file may be changed once this returns.
pub fn load_safetensors_copied(path: impl AsRef<Path>) -> Result<BTreeMap<String, Array>> {
    Ok(read_safetensors_copied(path)?.tensors)
}

/// [`load_safetensors_copied`] that also returns the metadata.
pub fn read_safetensors_copied(path: impl AsRef<Path>) -> Result<Loaded> {
    let path = path.as_ref();
    let map = map_file(path)?;
    read_tensors(&map, None, &path.display().to_string())
}

/// Parses a safetensors file held in memory; `what` names it in errors. Same conversions and
/// checks as [`load_safetensors`].
pub fn load_safetensors_bytes(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Array>> {
    Ok(read_safetensors_bytes(bytes, what)?.tensors)
}

/// [`load_safetensors_bytes`] that also returns the metadata.
pub fn read_safetensors_bytes(bytes: &[u8], what: &str) -> Result<Loaded> {
    read_tensors(bytes, None, what)
}

/// Parses the file in `bytes`. With `owner` (which must own exactly `bytes`), aligned F32
/// tensors borrow it in place; without, every tensor is copied.
fn read_tensors(bytes: &[u8], owner: Option<&ByteOwner>, what: &str) -> Result<Loaded> {
    let header = parse_header(bytes, what)?;
    // The header is valid by our checks; the crate must agree before it hands out views.
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(what, format!("safetensors: {e}")))?;
    let mut tensors = BTreeMap::new();
    for info in &header.tensors {
        let view = st.tensor(&info.name).map_err(|e| format_err(what, format!("tensor {:?}: {e}", info.name)))?;
        if view.dtype() != info.dtype || view.shape() != info.shape.as_slice() {
            return Err(format_err(what, format!("tensor {:?}: inconsistent header", info.name)));
        }
        let in_place = match (owner, info.dtype) {
            (Some(owner), Dtype::F32) => {
                let offset = 8 + header.header_len + info.data_offsets.0;
                ExternalF32::new(owner.clone(), offset, info.numel())
            }
            _ => None,
        };
        let arr = match in_place {
            Some(ext) => Array::from_external_f32(ext, &info.shape).map_err(|e| e.to_string()),
            None => convert(info, view.data()),
        }
        .map_err(|msg| format_err(what, format!("tensor {:?}: {msg}", info.name)))?;
        tensors.insert(info.name.clone(), arr);
    }
    Ok(Loaded { tensors, metadata: header.metadata })
}

/// Reads and checks the header of a safetensors file without converting any tensor (the
/// data is mapped, not read).
pub fn read_header(path: impl AsRef<Path>) -> Result<Header> {
    let path = path.as_ref();
    let map = map_file(path)?;
    parse_header(&map, &path.display().to_string())
}

/// Memory-maps `path` after checking it is long enough to hold a header length.
fn map_file(path: &Path) -> Result<Mmap> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(format_err(
            &path.display().to_string(),
            format!("file is {len} bytes, too short for the 8-byte header length (truncated or not safetensors)"),
        ));
    }
    // SAFETY: the map is read-only (PROT_READ, and arrays copy before writing); it lives as
    // long as the arrays borrowing it. The documented contract (load_safetensors, docs/io.md)
    // is that the file is not modified in place or truncated meanwhile.
    unsafe { Mmap::map(&file) }.map_err(io)
}

fn format_err(what: &str, msg: impl Into<String>) -> Error {
    Error::Format { what: what.to_string(), msg: msg.into() }
}

/// Parses and checks the header of a safetensors file held in `bytes` (the whole file);
/// `what` names it in errors. Checks, in order: the file holds the 8-byte length and the
/// header it announces (before anything of that size is touched), the header is at most
/// [`MAX_HEADER_LEN`] bytes, UTF-8 and a JSON object; no name appears twice; `__metadata__`
/// maps strings to strings; each tensor has a known dtype, a shape whose byte size (and the
/// product of its non-zero dims) does not overflow and equals its `data_offsets` range, and
/// offsets inside the data; the tensors' ranges neither overlap nor leave holes, and cover
/// the data exactly.
pub fn parse_header(bytes: &[u8], what: &str) -> Result<Header> {
    let err = |msg: String| format_err(what, msg);
    let len = bytes.len();
    if len < 8 {
        return Err(err(format!(
            "file is {len} bytes, too short for the 8-byte header length (truncated or not safetensors)"
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > (len - 8) as u64 {
        return Err(err(format!(
            "header length {n} is larger than the {} bytes that follow it (truncated or not safetensors)",
            len - 8
        )));
    }
    let n = n as usize;
    if n > MAX_HEADER_LEN {
        return Err(err(format!("header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes")));
    }
    let text = std::str::from_utf8(&bytes[8..8 + n])
        .map_err(|e| err(format!("header is not valid UTF-8 (byte {} of the header)", e.valid_up_to())))?;
    let raw: RawHeader = {
        let mut de = serde_json::Deserializer::from_str(text);
        let raw = de.deserialize_map(RawVisitor).and_then(|r| de.end().map(|_| r));
        raw.map_err(|e| err(format!("header is not a valid JSON object: {e}")))?
    };
    let data_len = len - 8 - n;

    let mut seen = BTreeSet::new();
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(raw.0.len());
    for (name, value) in raw.0 {
        if !seen.insert(name.clone()) {
            return Err(err(format!("name {name:?} appears twice in the header")));
        }
        if name == "__metadata__" {
            metadata = parse_metadata(value).map_err(err)?;
        } else {
            let info = parse_info(name, &value, data_len).map_err(err)?;
            tensors.push(info);
        }
    }
    // Ranges in data order: each must start where the previous ended.
    tensors.sort_by_key(|t| t.data_offsets);
    let mut end = 0usize;
    let mut prev: Option<&TensorInfo> = None;
    for t in &tensors {
        let (b, e) = t.data_offsets;
        if b < end {
            let p = prev.expect("end > 0 only after a tensor");
            return Err(err(format!(
                "tensors {:?} (bytes {}..{}) and {:?} (bytes {b}..{e}) overlap",
                p.name, p.data_offsets.0, p.data_offsets.1, t.name
            )));
        }
        if b > end {
            return Err(err(format!("bytes {end}..{b} of the data belong to no tensor (before {:?})", t.name)));
        }
        end = e;
        prev = Some(t);
    }
    if end != data_len {
        return Err(err(format!(
            "the data is {data_len} bytes but the tensors cover {end} (extra bytes at the end of the file)"
        )));
    }
    Ok(Header { tensors, metadata, header_len: n, data_len })
}

/// The header's entries in file order, duplicates kept (a JSON map would drop them).
struct RawHeader(Vec<(String, Value)>);

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawHeader;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
        // No capacity from the size hint: it comes from the input.
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            out.push(entry);
        }
        Ok(RawHeader(out))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_metadata(value: Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err(format!("__metadata__ must be an object of strings, got {}", json_kind(&value)));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(format!("__metadata__ entry {k:?} must be a string, got {}", json_kind(&other))),
        })
        .collect()
}

/// The dtype named `s` in a header.
pub fn parse_dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "BOOL" => Dtype::BOOL,
        "U8" => Dtype::U8,
        "I8" => Dtype::I8,
        "F8_E5M2" => Dtype::F8_E5M2,
        "F8_E4M3" => Dtype::F8_E4M3,
        "I16" => Dtype::I16,
        "U16" => Dtype::U16,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I32" => Dtype::I32,
        "U32" => Dtype::U32,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        "I64" => Dtype::I64,
        "U64" => Dtype::U64,
        _ => return None,
    })
}

fn usize_list(v: Option<&Value>, field: &str) -> std::result::Result<Vec<usize>, String> {
    let arr = v
        .ok_or_else(|| format!("missing {field}"))?
        .as_array()
        .ok_or_else(|| format!("{field} must be an array of non-negative integers"))?;
    arr.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| format!("{field} must hold non-negative integers, got {x}"))
        })
        .collect()
}

fn parse_info(name: String, value: &Value, data_len: usize) -> std::result::Result<TensorInfo, String> {
    let fail = |msg: String| format!("tensor {name:?}: {msg}");
    let Value::Object(obj) = value else {
        return Err(fail(format!("entry must be an object, got {}", json_kind(value))));
    };
    let dtype_name = match obj.get("dtype") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => return Err(fail(format!("dtype must be a string, got {}", json_kind(v)))),
        None => return Err(fail("missing dtype".into())),
    };
    let dtype = parse_dtype(dtype_name).ok_or_else(|| fail(format!("unknown dtype {dtype_name:?}")))?;
    let shape = usize_list(obj.get("shape"), "shape").map_err(fail)?;
    let offsets = usize_list(obj.get("data_offsets"), "data_offsets").map_err(fail)?;
    let &[begin, end] = offsets.as_slice() else {
        return Err(fail(format!("data_offsets must be [begin, end], got {} numbers", offsets.len())));
    };
    if begin > end {
        return Err(fail(format!("data_offsets [{begin}, {end}] end before they begin")));
    }
    if end > data_len {
        return Err(fail(format!("data_offsets [{begin}, {end}] run past the end of the data ({data_len} bytes)")));
    }
    // The product of the non-zero dims must fit, not only the element count: an array's
    // row-major strides multiply the trailing dims, which a zero further left does not stop.
    let nonzero_bytes = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| fail(format!("shape {shape:?} of {dtype:?} has more bytes than fit in memory")))?;
    let nbytes = if shape.contains(&0) { 0 } else { nonzero_bytes };
    if nbytes != end - begin {
        return Err(fail(format!(
            "shape {shape:?} of {dtype:?} needs {nbytes} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        )));
    }
    Ok(TensorInfo { name, dtype, shape, data_offsets: (begin, end) })
}

/// One tensor's bytes as an array (see [`load_safetensors`] for the conversions).
fn convert(info: &TensorInfo, data: &[u8]) -> std::result::Result<Array, String> {
    let shape = info.shape.as_slice();
    let arr = match info.dtype {
        Dtype::F32 => Array::from_vec(le::<4, _>(data, f32::from_le_bytes), shape),
        Dtype::F64 => Array::from_vec(le::<8, _>(data, |b| f64::from_le_bytes(b) as f32), shape),
        Dtype::F16 => Array::from_vec(le::<2, _>(data, |b| half::f16::from_le_bytes(b).to_f32()), shape),
        Dtype::BF16 => Array::from_vec(le::<2, _>(data, |b| half::bf16::from_le_bytes(b).to_f32()), shape),
        // E5M2 is the upper byte of an IEEE half.
        Dtype::F8_E5M2 => {
            Array::from_vec(le::<1, _>(data, |b| half::f16::from_bits(u16::from(b[0]) << 8).to_f32()), shape)
        }
        Dtype::F8_E4M3 => Array::from_vec(le::<1, _>(data, |b| f8_e4m3fn_to_f32(b[0])), shape),
        Dtype::I64 => Array::from_vec(le::<8, _>(data, i64::from_le_bytes), shape),
        Dtype::I32 => Array::from_vec(le::<4, _>(data, |b| i64::from(i32::from_le_bytes(b))), shape),
        Dtype::I16 => Array::from_vec(le::<2, _>(data, |b| i64::from(i16::from_le_bytes(b))), shape),
        Dtype::I8 => Array::from_vec(le::<1, _>(data, |b| i64::from(i8::from_le_bytes(b))), shape),
        Dtype::U32 => Array::from_vec(le::<4, _>(data, |b| i64::from(u32::from_le_bytes(b))), shape),
        Dtype::U16 => Array::from_vec(le::<2, _>(data, |b| i64::from(u16::from_le_bytes(b))), shape),
        Dtype::U64 => {
            let v: Vec<u64> = le::<8, _>(data, u64::from_le_bytes);
            if let Some(i) = v.iter().position(|&x| x > i64::MAX as u64) {
                return Err(format!("U64 value {} (element {i}) does not fit in i64", v[i]));
            }
            Array::from_vec(v.into_iter().map(|x| x as i64).collect::<Vec<i64>>(), shape)
        }
        Dtype::U8 | Dtype::BOOL => Array::from_vec(data.to_vec(), shape),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    arr.map_err(|e| e.to_string())
}

fn le<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
}

/// FP8 E4M3 in its `fn` variant (PyTorch's `float8_e4m3fn`): exponent bias 7, no infinities,
/// `S.1111.111` is NaN. Exact.
fn f8_e4m3fn_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0xf);
    let mant = f32::from(b & 0x7);
    if exp == 0xf && b & 0x7 == 0x7 {
        return f32::NAN;
    }
    let mag = if exp == 0 { mant * 2f32.powi(-9) } else { (1.0 + mant / 8.0) * 2f32.powi(exp - 7) };
    sign * mag
}

// ---------------------------------------------------------------------- writing

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
    }
}

/// Writes named arrays as a safetensors file at `path`, atomically (see
/// [`crate::write_atomically`]: a failure or crash part-way leaves any previous file at
/// `path` as it was). Arrays keep their dtype: F32, I64 and U8 (views are written
/// row-major). `metadata` becomes the `__metadata__` map. Tensors are stored in name order;
/// a name given twice, or named `__metadata__`, is an error. See [`load_safetensors`] for an
/// example.
pub fn save_safetensors<'a, N: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (N, &'a Array)>,
    metadata: Option<BTreeMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let what = path.display().to_string();
    // Collect first so that bad names fail before the file is created.
    let entries = collect_entries(&what, tensors)?;
    write_atomically(path, |w| write_entries(w, &what, &entries, metadata.as_ref()))
}

/// Writes named arrays in the safetensors format to `w` (see [`save_safetensors`]); `what`
/// names the destination in errors. Streams each tensor's bytes without building the file in
/// memory.
pub fn write_safetensors<'a, N: AsRef<str>>(
    w: &mut dyn Write,
    what: &str,
    tensors: impl IntoIterator<Item = (N, &'a Array)>,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let entries = collect_entries(what, tensors)?;
    write_entries(w, what, &entries, metadata)
}

fn collect_entries<'a, N: AsRef<str>>(
    what: &str,
    tensors: impl IntoIterator<Item = (N, &'a Array)>,
) -> Result<BTreeMap<String, &'a Array>> {
    let mut out = BTreeMap::new();
    for (name, a) in tensors {
        let name = name.as_ref();
        if name == "__metadata__" {
            return Err(format_err(what, "a tensor cannot be named \"__metadata__\" (reserved for the metadata)"));
        }
        if out.insert(name.to_string(), a).is_some() {
            return Err(format_err(what, format!("tensor name {name:?} given twice")));
        }
    }
    Ok(out)
}

fn write_entries(
    w: &mut dyn Write,
    what: &str,
    entries: &BTreeMap<String, &Array>,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let m: serde_json::Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        header.insert("__metadata__".to_string(), Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, a) in entries {
        let nbytes = a.numel() * a.dtype().size_in_bytes();
        let dtype = format!("{:?}", st_dtype(a.dtype()));
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": a.shape(), "data_offsets": [offset, offset + nbytes] }),
        );
        offset += nbytes;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).map_err(|e| format_err(what, e.to_string()))?;
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    json.resize(json.len().next_multiple_of(8), b' ');
    let io = |source| Error::Io { path: what.to_string(), source };
    w.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for a in entries.values() {
        let a = a.contiguous();
        match a.dtype() {
            DType::F32 => write_le(w, &mut buf, a.as_slice::<f32>().expect("contiguous f32"), |x| x.to_le_bytes()),
            DType::I64 => write_le(w, &mut buf, a.as_slice::<i64>().expect("contiguous i64"), |x| x.to_le_bytes()),
            DType::U8 => w.write_all(a.as_slice::<u8>().expect("contiguous u8")),
        }
        .map_err(io)?;
    }
    Ok(())
}

/// Writes `xs` little-endian through `buf` in 64 KiB pieces.
fn write_le<T: Copy, const N: usize>(
    w: &mut dyn Write,
    buf: &mut Vec<u8>,
    xs: &[T],
    f: impl Fn(T) -> [u8; N],
) -> std::io::Result<()> {
    for chunk in xs.chunks((1 << 16) / N) {
        buf.clear();
        for &x in chunk {
            buf.extend_from_slice(&f(x));
        }
        w.write_all(buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_e4m3fn_known_values() {
        assert_eq!(f8_e4m3fn_to_f32(0x38), 1.0);
        assert_eq!(f8_e4m3fn_to_f32(0xb8), -1.0);
        assert_eq!(f8_e4m3fn_to_f32(0x7e), 448.0);
        assert_eq!(f8_e4m3fn_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f8_e4m3fn_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(f8_e4m3fn_to_f32(0x3c), 1.5);
        assert!(f8_e4m3fn_to_f32(0x7f).is_nan() && f8_e4m3fn_to_f32(0xff).is_nan());
        assert_eq!(f8_e4m3fn_to_f32(0x00), 0.0);
    }
}
