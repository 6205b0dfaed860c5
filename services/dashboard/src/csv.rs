//! Tables as CSV for spreadsheets. A text cell a spreadsheet would take for a formula (one
//! starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is written with a leading `'`,
//! as OWASP advises against CSV injection, so a target, a text parameter or a job id crafted as
//! `=HYPERLINK(…)` opens as text. Only text columns are touched: a negative loss stays a number.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use bytes::Bytes;

/// The first characters that make a spreadsheet read a cell as a formula.
pub const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether a spreadsheet would read `text` as a formula.
fn is_formula(text: &str) -> bool {
    text.starts_with(FORMULA_STARTS)
}

/// `batch` as CSV, after a header row when `header`, with formula-like text neutralised.
pub fn encode(batch: &RecordBatch, header: bool) -> Result<Bytes, ArrowError> {
    let batch = neutralise_formulas(batch)?;
    let mut out = Vec::new();
    arrow::csv::WriterBuilder::new().with_header(header).build(&mut out).write(&batch)?;
    Ok(Bytes::from(out))
}

/// `batch` with every formula-like text cell prefixed by `'`. A text column (`Utf8`,
/// `LargeUtf8`, `Utf8View` or a dictionary of text) holding such a cell becomes `Utf8`; every
/// other column is passed through as it is.
pub fn neutralise_formulas(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut changed = false;
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match neutralised(column)? {
            Some(column) => {
                changed = true;
                fields.push(Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8)));
                columns.push(column);
            }
            None => {
                fields.push(Arc::clone(field));
                columns.push(Arc::clone(column));
            }
        }
    }
    if !changed {
        return Ok(batch.clone());
    }
    RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), columns)
}

/// `column` with its formula-like cells prefixed, or `None` when it is not text or has none.
fn neutralised(column: &ArrayRef) -> Result<Option<ArrayRef>, ArrowError> {
    let is_text = |data_type: &DataType| matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let text = match column.data_type() {
        DataType::Dictionary(_, values) if is_text(values) => arrow::compute::cast(column, &DataType::Utf8)?,
        data_type if is_text(data_type) => arrow::compute::cast(column, &DataType::Utf8)?,
        _ => return Ok(None),
    };
    let strings = text.as_string::<i32>();
    if !strings.iter().flatten().any(is_formula) {
        return Ok(None);
    }
    let prefixed: StringArray = strings
        .iter()
        .map(|cell| cell.map(|text| if is_formula(text) { Cow::Owned(format!("'{text}")) } else { Cow::Borrowed(text) }))
        .collect();
    Ok(Some(Arc::new(prefixed)))
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Float64Array, Int64Array, LargeStringArray};
    use arrow::datatypes::{Field, Int32Type};

    use super::*;

    #[test]
    fn formulas_in_text_cells_are_neutralised_and_numbers_kept() {
        let hostile = r#"=HYPERLINK("http://x","y")"#;
        let schema = Arc::new(Schema::new(vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, true),
            Field::new("param_label", DataType::LargeUtf8, true),
            Field::new("status", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), false),
            Field::new("loss", DataType::Float64, true),
            Field::new("n_replicates", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["job-1", "-job", "job-3", "job-4", "job-5", "job-6", "job-7"])),
                Arc::new(StringArray::from(vec![Some(hostile), Some("+1"), Some("@SUM(A1)"), Some("\tx"), Some("\rx"), None, Some("safe=1")])),
                Arc::new(LargeStringArray::from(vec!["=1+1", "a", "b", "c", "d", "e", "f"])),
                Arc::new(["ok", "ok", "=cmd|' /C calc'!A0", "ok", "ok", "ok", "ok"].into_iter().collect::<DictionaryArray<Int32Type>>()),
                Arc::new(Float64Array::from(vec![-0.5, 1.0, -2e-3, 0.0, 3.5, -1.0, 2.0])),
                Arc::new(Int64Array::from(vec![-1, 2, 3, 4, 5, 6, 7])),
            ],
        )
        .unwrap();
        let csv = String::from_utf8(encode(&batch, true).unwrap().to_vec()).unwrap();
        let lines: Vec<&str> = csv.split('\n').collect();
        assert_eq!(lines[0], "job_id,target,param_label,status,loss,n_replicates");
        assert_eq!(lines[1], r#"job-1,"'=HYPERLINK(""http://x"",""y"")",'=1+1,ok,-0.5,-1"#);
        assert_eq!(lines[2], "'-job,'+1,a,ok,1.0,2");
        assert_eq!(lines[3], "job-3,'@SUM(A1),b,'=cmd|' /C calc'!A0,-0.002,3");
        assert_eq!(lines[4], "job-4,'\tx,c,ok,0.0,4");
        assert!(lines[5].starts_with("job-5,\"'\rx\",d,ok,3.5,5"), "{:?}", lines[5]);
        assert_eq!(lines[6], "job-6,,e,ok,-1.0,6", "a null stays empty");
        assert_eq!(lines[7], "job-7,safe=1,f,ok,2.0,7");
    }

    #[test]
    fn a_batch_without_formulas_is_passed_through() {
        let batch = RecordBatch::try_from_iter([
            ("target", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
            ("loss", Arc::new(Float64Array::from(vec![-1.0, 2.0])) as ArrayRef),
        ])
        .unwrap();
        let same = neutralise_formulas(&batch).unwrap();
        assert_eq!(same, batch);
        assert!(Arc::ptr_eq(same.column(0), batch.column(0)));
    }
}
