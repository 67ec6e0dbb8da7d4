//! The metadata table of a partition: `image_path`, `key`, `caption`, `similarity` (with
//! captions embedded), `width`, `height`, then every field of the samples' JSON flattened into
//! columns as pandas' `json_normalize` names them (`exif.Make`), which is what clip-retrieval's
//! writer does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use serde_json::Value;

/// One row of the metadata table.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaRow {
    pub image_path: String,
    pub key: String,
    pub caption: Option<String>,
    /// Cosine of the image and caption embeddings (with `--text` and a caption).
    pub similarity: Option<f32>,
    pub width: i64,
    pub height: i64,
    /// The sample's JSON, flattened (`a.b` for nested objects; arrays as JSON text).
    pub json: BTreeMap<String, Value>,
}

/// The fixed columns; JSON fields of the same name are dropped (ours describe the decoded
/// image and its caption).
pub const FIXED_COLUMNS: &[&str] = &[
    "image_path",
    "key",
    "caption",
    "similarity",
    "width",
    "height",
];

/// Flattens a JSON object like `pandas.json_normalize`: nested objects give `parent.child`
/// columns, everything else (arrays included) is a value.
pub fn flatten_json(value: Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    match value {
        v @ Value::Object(_) => walk("", v, &mut out),
        // A JSON file that is not an object: one column named `json`.
        other => {
            out.insert("json".to_string(), other);
        }
    }
    out.retain(|k, _| !FIXED_COLUMNS.contains(&k.as_str()));
    out
}

/// Builds the table; `with_similarity` adds the `similarity` column.
pub fn to_batch(rows: &[MetaRow], with_similarity: bool) -> Result<RecordBatch, String> {
    let mut fields = vec![
        Field::new("image_path", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("caption", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.image_path),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.key))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.caption.as_deref()),
        )),
    ];
    if with_similarity {
        fields.push(Field::new("similarity", DataType::Float32, true));
        columns.push(Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.similarity),
        )));
    }
    fields.push(Field::new("width", DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r.width),
    )));
    fields.push(Field::new("height", DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r.height),
    )));

    let names: BTreeSet<&String> = rows.iter().flat_map(|r| r.json.keys()).collect();
    for name in names {
        let values: Vec<Option<&Value>> = rows
            .iter()
            .map(|r| r.json.get(name).filter(|v| !v.is_null()))
            .collect();
        let (dtype, column) = json_column(&values);
        fields.push(Field::new(name.as_str(), dtype, true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// One column of JSON values: booleans, integers, numbers or strings when all values (nulls
/// aside) are of that kind; otherwise each value's JSON text.
fn json_column(values: &[Option<&Value>]) -> (DataType, ArrayRef) {
    let present = || values.iter().flatten();
    if present().all(|v| v.is_boolean()) {
        let col = BooleanArray::from_iter(values.iter().map(|v| v.and_then(Value::as_bool)));
        return (DataType::Boolean, Arc::new(col));
    }
    if present().all(|v| v.is_i64()) {
        let col = Int64Array::from_iter(values.iter().map(|v| v.and_then(Value::as_i64)));
        return (DataType::Int64, Arc::new(col));
    }
    if present().all(|v| v.is_number()) {
        let col = Float64Array::from_iter(values.iter().map(|v| v.and_then(Value::as_f64)));
        return (DataType::Float64, Arc::new(col));
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let col = StringArray::from_iter(values.iter().map(|v| v.map(text)));
    (DataType::Utf8, Arc::new(col))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_is_flattened_like_json_normalize() {
        let flat = flatten_json(json!({
            "url": "http://x", "exif": {"Make": "Canon", "GPS": {"lat": 1.5}},
            "tags": [1, 2], "width": 7, "empty": {}
        }));
        let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        assert_eq!(keys, ["empty", "exif.GPS.lat", "exif.Make", "tags", "url"]);
        assert_eq!(flat["exif.GPS.lat"], json!(1.5));
    }

    #[test]
    fn column_types_follow_the_values() {
        let row = |json: Value| MetaRow {
            image_path: "a.jpg".into(),
            key: "a".into(),
            caption: None,
            similarity: None,
            width: 1,
            height: 2,
            json: flatten_json(json),
        };
        let rows = [
            row(json!({"n": 1, "f": 1, "s": "x", "b": true, "m": 1})),
            row(json!({"n": 2, "f": 2.5, "b": null, "m": "y"})),
        ];
        let batch = to_batch(&rows, true).unwrap();
        let schema = batch.schema();
        let dtype = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
        assert_eq!(dtype("n"), DataType::Int64);
        assert_eq!(dtype("f"), DataType::Float64);
        assert_eq!(dtype("s"), DataType::Utf8);
        assert_eq!(dtype("b"), DataType::Boolean);
        assert_eq!(dtype("m"), DataType::Utf8);
        assert_eq!(dtype("similarity"), DataType::Float32);
        assert_eq!(batch.num_rows(), 2);
    }
}
