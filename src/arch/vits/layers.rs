//! The building blocks VITS uses everywhere, on `[batch, channels, time]` tensors: 1-D convolutions
//! with "same" padding, layer norm over channels, and masks for batches of different lengths.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// A convolution's (weight, bias, dilation) as plain vectors, for our CPU kernels.
pub type CpuConv = (Vec<f32>, Vec<f32>, usize);

/// A 1-D convolution (weight-norm already folded into the weight by the exporter).
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    dilation: usize,
    groups: usize,
}

impl Conv1d {
    /// "Same" padding for an odd kernel: the output is as long as the input.
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Self> {
        Self::load_with(vb, c_in, c_out, kernel, dilation, groups, true)
    }

    pub fn load_with(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        dilation: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.get((c_out, c_in / groups, kernel), "weight")?;
        let bias = if bias { Some(vb.get(c_out, "bias")?) } else { None };
        Ok(Self { weight, bias, padding: dilation * (kernel - 1) / 2, dilation, groups })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dim(0).expect("3-d weight")
    }

    /// The weights as plain vectors for our CPU kernels: (weight, bias, dilation), a missing bias as
    /// zeros. `None` on another device.
    pub fn cpu_parts(&self) -> Result<Option<CpuConv>> {
        if !self.weight.device().is_cpu() {
            return Ok(None);
        }
        let bias = match &self.bias {
            Some(b) => b.to_vec1()?,
            None => vec![0.0; self.out_channels()],
        };
        Ok(Some((self.weight.flatten_all()?.to_vec1()?, bias, self.dilation)))
    }
}

impl Conv1d {
    /// A depthwise convolution as `kernel` shifted multiply-adds: candle would run one small
    /// convolution per channel.
    fn depthwise(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, t) = x.dims3()?;
        let k = self.weight.dim(2)?;
        let padded = x.pad_with_zeros(2, self.padding, self.padding)?;
        let mut y: Option<Tensor> = None;
        for i in 0..k {
            let tap = self.weight.narrow(2, i, 1)?.reshape((1, (), 1))?;
            let term = padded.narrow(2, i * self.dilation, t)?.broadcast_mul(&tap)?;
            y = Some(match y {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
        Ok(y.expect("a kernel has at least one tap"))
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.groups > 1 && self.groups == x.dim(1)? && self.weight.dim(1)? == 1 {
            self.depthwise(x)?
        } else {
            x.conv1d(&self.weight, self.padding, 1, self.dilation, self.groups)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
            None => Ok(y),
        }
    }
}

/// A transposed 1-D convolution that upsamples by `stride`.
pub struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvTranspose1d {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((c_in, c_out, kernel), "weight")?,
            bias: vb.get(c_out, "bias")?,
            stride,
            padding: (kernel - stride) / 2,
        })
    }
}

impl Module for ConvTranspose1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose1d(&self.weight, self.padding, 0, self.stride, 1, 1)?.broadcast_add(&self.bias.reshape((
            1,
            (),
            1,
        ))?)
    }
}

/// Layer norm over the channel axis of `[batch, channels, time]` (VITS' `LayerNorm`, `gamma`/`beta`).
pub struct ChannelNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl ChannelNorm {
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { gamma: vb.get(channels, "gamma")?, beta: vb.get(channels, "beta")? })
    }
}

impl Module for ChannelNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.transpose(1, 2)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        normed.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)?.transpose(1, 2)
    }
}

pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    x.maximum(&(x * slope)?)
}

/// `[batch, 1, max_len]`: 1 where a position is inside its sequence.
pub fn sequence_mask(lengths: &[usize], max_len: usize, device: &candle_core::Device) -> Result<Tensor> {
    let values: Vec<f32> =
        lengths.iter().flat_map(|&l| (0..max_len).map(move |t| if t < l { 1.0 } else { 0.0 })).collect();
    Tensor::from_vec(values, (lengths.len(), 1, max_len), device)?.to_dtype(DType::F32)
}
