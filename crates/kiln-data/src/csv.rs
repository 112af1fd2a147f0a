//! A CSV reader for numeric tables: feature columns and an optional label column.

use crate::dataset::ArrayDataset;
use crate::{format_err, read_file};
use kiln_tensor::{Array, Result};
use std::path::Path;

/// What the first row of the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// No header: every row is data; columns are named `"0"`, `"1"`, ...
    None,
    /// Column names.
    Names,
    /// scikit-learn's bundled-data header `n_samples,n_features,class_0,class_1,...`: the
    /// data rows then hold `n_features` features and the class index last.
    Sklearn,
}

/// The column holding the labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// By position; negative counts from the end (`-1` is the last column).
    Index(isize),
    /// By header name.
    Name(String),
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field separator (default `,`).
    pub delimiter: char,
    /// The first row (default [`Header::Names`]).
    pub header: Header,
    /// The label column; `None` reads every column as a feature.
    pub label: Option<LabelColumn>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { delimiter: ',', header: Header::Names, label: None }
    }
}

impl CsvOptions {
    /// A header of names and the labels in the named column.
    pub fn label_name(name: &str) -> CsvOptions {
        CsvOptions { label: Some(LabelColumn::Name(name.into())), ..CsvOptions::default() }
    }

    /// A header of names and the labels in column `index` (negative from the end).
    pub fn label_index(index: isize) -> CsvOptions {
        CsvOptions { label: Some(LabelColumn::Index(index)), ..CsvOptions::default() }
    }

    /// scikit-learn's bundled CSVs (iris, wine, breast_cancer): [`Header::Sklearn`], label last.
    pub fn sklearn() -> CsvOptions {
        CsvOptions { header: Header::Sklearn, label: Some(LabelColumn::Index(-1)), ..CsvOptions::default() }
    }
}

/// A numeric table read from CSV.
#[derive(Debug, Clone)]
pub struct CsvTable {
    /// The feature columns, f32 `[rows, features]`.
    pub features: Array,
    /// The labels, one per row, when a label column was named.
    pub labels: Option<Vec<i64>>,
    /// The feature columns' names.
    pub feature_names: Vec<String>,
    /// Class names: from a sklearn header, or the sorted distinct values of a non-integer
    /// label column (label `k` is `classes[k]`); empty when labels are plain integers.
    pub classes: Vec<String>,
}

impl CsvTable {
    /// A labelled dataset of the rows (errors when no label column was read).
    pub fn into_dataset(self) -> Result<ArrayDataset> {
        let Some(labels) = self.labels else {
            return Err(kiln_tensor::Error::op("CsvTable::into_dataset", "the table has no label column"));
        };
        ArrayDataset::from_labels(self.features, labels)
    }
}

/// Reads a CSV file (UTF-8) of numbers.
pub fn read_csv(path: impl AsRef<Path>, options: &CsvOptions) -> Result<CsvTable> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let bytes = read_file(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format_err(&what, format!("not UTF-8 text: {e}")))?;
    parse_csv(text, &what, options)
}

/// Splits one line into fields; double quotes enclose fields that contain the delimiter
/// (`""` inside quotes is a quote).
fn split_fields(line: &str, delim: char) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == delim {
            fields.push(if was_quoted {
                std::mem::take(&mut cur)
            } else {
                std::mem::take(&mut cur).trim().to_string()
            });
            was_quoted = false;
        } else if c == '"' && cur.trim().is_empty() {
            cur.clear();
            quoted = true;
            was_quoted = true;
        } else {
            cur.push(c);
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(if was_quoted { cur } else { cur.trim().to_string() });
    Ok(fields)
}

/// Parses CSV text of numbers; `what` names the input in errors. Blank lines are skipped.
pub fn parse_csv(text: &str, what: &str, options: &CsvOptions) -> Result<CsvTable> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let line_err = |i: usize, msg: String| format_err(what, format!("line {}: {msg}", i + 1));
    let fields = |i: usize, l: &str| split_fields(l, options.delimiter).map_err(|m| line_err(i, m));

    // The header, and from it the column names and the sklearn counts.
    let mut first_data = None;
    let mut sklearn: Option<(usize, Vec<String>)> = None;
    let names: Vec<String> = match options.header {
        Header::Names => {
            let Some((i, l)) = lines.next() else {
                return Err(format_err(what, "empty file: expected a header row"));
            };
            fields(i, l)?
        }
        Header::Sklearn => {
            let Some((i, l)) = lines.next() else {
                return Err(format_err(what, "empty file: expected a header row"));
            };
            let h = fields(i, l)?;
            let count = |k: usize, name: &str| -> Result<usize> {
                h.get(k).and_then(|f| f.parse().ok()).ok_or_else(|| {
                    line_err(i, format!("sklearn header: field {} ({name}) must be a count, got {:?}", k + 1, h.get(k)))
                })
            };
            let (n_samples, n_features) = (count(0, "n_samples")?, count(1, "n_features")?);
            sklearn = Some((n_samples, h[2..].to_vec()));
            let mut names: Vec<String> = (0..n_features).map(|k| k.to_string()).collect();
            names.push("target".into());
            names
        }
        Header::None => {
            let Some((i, l)) = lines.next() else {
                return Err(format_err(what, "empty file: no rows"));
            };
            let f = fields(i, l)?;
            let names = (0..f.len()).map(|k| k.to_string()).collect();
            first_data = Some((i, f));
            names
        }
    };
    let ncols = names.len();
    let label_col = match &options.label {
        None => None,
        Some(LabelColumn::Index(k)) => {
            let c = if *k < 0 { ncols as isize + k } else { *k };
            if c < 0 || c >= ncols as isize {
                return Err(format_err(what, format!("label column {k} is out of range for {ncols} columns")));
            }
            Some(c as usize)
        }
        Some(LabelColumn::Name(n)) => Some(
            names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| format_err(what, format!("no column named {n:?} (columns: {})", names.join(", "))))?,
        ),
    };
    let feature_names: Vec<String> =
        names.iter().enumerate().filter(|&(k, _)| Some(k) != label_col).map(|(_, n)| n.clone()).collect();

    let mut values: Vec<f32> = Vec::new();
    let mut raw_labels: Vec<String> = Vec::new();
    let mut rows = 0usize;
    let mut row = |i: usize, f: Vec<String>| -> Result<()> {
        if f.len() != ncols {
            return Err(line_err(i, format!("expected {ncols} fields, found {}", f.len())));
        }
        for (k, v) in f.into_iter().enumerate() {
            if Some(k) == label_col {
                raw_labels.push(v);
                continue;
            }
            let x: f32 =
                v.trim().parse().map_err(|_| line_err(i, format!("column {:?}: {v:?} is not a number", names[k])))?;
            values.push(x);
        }
        rows += 1;
        Ok(())
    };
    if let Some((i, f)) = first_data {
        row(i, f)?;
    }
    for (i, l) in lines {
        row(i, fields(i, l)?)?;
    }

    let mut classes = Vec::new();
    let labels = if label_col.is_some() {
        let ints: Option<Vec<i64>> = raw_labels.iter().map(|s| s.trim().parse().ok()).collect();
        Some(match ints {
            Some(v) => v,
            None => {
                // Class names: label k is the k-th distinct value in sorted order.
                classes = raw_labels.clone();
                classes.sort();
                classes.dedup();
                raw_labels.iter().map(|s| classes.binary_search(s).expect("present") as i64).collect()
            }
        })
    } else {
        None
    };
    if let Some((n_samples, names)) = sklearn {
        if n_samples != rows {
            return Err(format_err(what, format!("the sklearn header declares {n_samples} rows, found {rows}")));
        }
        // The last column holds class indices into the header's names.
        if let (Some(labels), true) = (&labels, label_col == Some(ncols - 1)) {
            if !classes.is_empty() {
                return Err(format_err(what, "the sklearn format needs integer class indices in the last column"));
            }
            if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= names.len()) {
                return Err(format_err(
                    what,
                    format!("label {bad} is not a class index of the header's {} classes", names.len()),
                ));
            }
            classes = names;
        }
    }
    let features = Array::from_vec(values, &[rows, feature_names.len()])?;
    Ok(CsvTable { features, labels, feature_names, classes })
}
