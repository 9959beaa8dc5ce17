//! Model code. `llama` is the llama family (Llama, SmolLM, Mistral-style GQA without biases),
//! batched over sequences of different lengths; `vits` is the VITS voice Piper uses, batched over
//! sentences of different lengths.

pub mod attention;
pub mod cpu;
pub mod linear;
pub mod llama;
pub mod vits;
