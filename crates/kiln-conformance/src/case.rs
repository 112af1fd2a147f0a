//! One conformance case: its manifest entry, its tensors, and typed access to its attrs.

use kiln::{Array, Error, Result, Tensor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A case as listed in `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseSpec {
    pub name: String,
    pub op: String,
    #[serde(default)]
    pub attrs: serde_json::Map<String, Value>,
    pub file: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub grad_wrt: Vec<String>,
    #[serde(default = "default_rtol")]
    pub rtol: f64,
    #[serde(default = "default_atol")]
    pub atol: f64,
}

fn default_rtol() -> f64 {
    1e-4
}
fn default_atol() -> f64 {
    1e-5
}

/// The whole manifest.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub cases: Vec<CaseSpec>,
}

/// A loaded case: the spec, every stored tensor, and the inputs as leaf tensors (the ones in
/// `grad_wrt` require grad).
pub struct Case {
    pub spec: CaseSpec,
    pub stored: BTreeMap<String, Array>,
    pub inputs: BTreeMap<String, Tensor>,
}

impl Case {
    /// Builds the input leaves from the stored tensors.
    pub fn new(spec: CaseSpec, stored: BTreeMap<String, Array>) -> Result<Case> {
        let mut inputs = BTreeMap::new();
        for name in &spec.inputs {
            let a =
                stored.get(name).ok_or_else(|| Error::Msg(format!("input {name} is not stored in the case file")))?;
            let t = Tensor::from_array(a.clone());
            if spec.grad_wrt.contains(name) {
                t.try_requires_grad_(true)?;
            }
            inputs.insert(name.clone(), t);
        }
        Ok(Case { spec, stored, inputs })
    }

    /// The input tensor `name`.
    pub fn input(&self, name: &str) -> Result<&Tensor> {
        self.inputs.get(name).ok_or_else(|| Error::Msg(format!("case has no input {name}")))
    }

    /// The input `name` if the case has it (optional arguments such as `bias`).
    pub fn opt_input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.get(name)
    }

    /// Inputs named `prefix.0`, `prefix.1`, ... in order (`tensors.0` for `cat`).
    pub fn input_list(&self, prefix: &str) -> Vec<&Tensor> {
        (0..).map_while(|i| self.inputs.get(&format!("{prefix}.{i}"))).collect()
    }

    /// The raw attribute value.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.spec.attrs.get(name).filter(|v| !v.is_null())
    }

    fn missing(&self, name: &str, what: &str) -> Error {
        Error::Msg(format!("attr {name}: expected {what}, got {:?}", self.spec.attrs.get(name)))
    }

    /// A float attribute (`"inf"`/`"-inf"` strings allowed).
    pub fn f64(&self, name: &str) -> Result<f64> {
        self.opt_f64(name)?.ok_or_else(|| self.missing(name, "a number"))
    }

    /// A float attribute that may be null or absent.
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if s == "inf" => Ok(Some(f64::INFINITY)),
            Some(Value::String(s)) if s == "-inf" => Ok(Some(f64::NEG_INFINITY)),
            Some(Value::Bool(b)) => Ok(Some(*b as u8 as f64)),
            Some(_) => Err(self.missing(name, "a number")),
        }
    }

    /// A float attribute as f32.
    pub fn f32(&self, name: &str) -> Result<f32> {
        Ok(self.f64(name)? as f32)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<i64> {
        self.opt_int(name)?.ok_or_else(|| self.missing(name, "an integer"))
    }

    /// An integer attribute that may be null or absent.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| self.missing(name, "an integer")),
            Some(Value::Bool(b)) => Ok(Some(*b as i64)),
            Some(_) => Err(self.missing(name, "an integer")),
        }
    }

    /// A boolean attribute (absent = false).
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.attr(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) => Ok(n.as_f64() != Some(0.0)),
            Some(_) => Err(self.missing(name, "a boolean")),
        }
    }

    /// A string attribute.
    pub fn str(&self, name: &str) -> Result<&str> {
        match self.attr(name) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.missing(name, "a string")),
        }
    }

    /// A list of integers, or a single integer as a one-element list; `None` when null/absent.
    pub fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_i64()
                        .or_else(|| v.as_f64().map(|f| f as i64))
                        .ok_or_else(|| self.missing(name, "a list of integers"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(Value::Number(n)) => Ok(Some(vec![n.as_i64().ok_or_else(|| self.missing(name, "an integer"))?])),
            Some(_) => Err(self.missing(name, "a list of integers")),
        }
    }

    /// A list of integers (required).
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        self.opt_ints(name)?.ok_or_else(|| self.missing(name, "a list of integers"))
    }

    /// A list of integers as `isize` dims.
    pub fn dims(&self, name: &str) -> Result<Vec<isize>> {
        Ok(self.ints(name)?.into_iter().map(|d| d as isize).collect())
    }

    /// A list of floats.
    pub fn floats(&self, name: &str) -> Result<Vec<f64>> {
        match self.attr(name) {
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_f64().ok_or_else(|| self.missing(name, "a list of numbers"))).collect()
            }
            _ => Err(self.missing(name, "a list of numbers")),
        }
    }

    /// The stored tensor `name` as an array.
    pub fn stored(&self, name: &str) -> Result<&Array> {
        self.stored.get(name).ok_or_else(|| Error::Msg(format!("tensor {name} is not stored in the case file")))
    }
}
