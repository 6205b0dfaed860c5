//! A loss table's text column as the query engine serves it: plain utf8, or a dictionary of
//! utf8 values (a job's whole table has its few-valued text columns as dictionaries,
//! `modelops_query::engine::served_schema`), read row by row the same way.

use arrow::array::{Array, AsArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type};

/// A utf8 column, or a dictionary of utf8 values with int32 keys.
#[derive(Debug, Clone, Copy)]
pub enum TextColumn<'a> {
    /// Every row's text.
    Plain(&'a StringArray),
    /// Each row's key into a few values.
    Dictionary {
        /// A key per row.
        keys: &'a Int32Array,
        /// The distinct values.
        values: &'a StringArray,
    },
}

impl<'a> TextColumn<'a> {
    /// `array` as a text column, when it is one of the two kinds.
    pub fn of(array: &'a dyn Array) -> Option<Self> {
        match array.data_type() {
            DataType::Utf8 => Some(Self::Plain(array.as_string::<i32>())),
            DataType::Dictionary(key, value) if **key == DataType::Int32 && **value == DataType::Utf8 => {
                let dictionary = array.as_dictionary::<Int32Type>();
                Some(Self::Dictionary {
                    keys: dictionary.keys(),
                    values: dictionary.values().as_string::<i32>(),
                })
            }
            _ => None,
        }
    }

    /// The column `name` of `batch` as a text column, when it has one.
    pub fn named(batch: &'a RecordBatch, name: &str) -> Option<Self> {
        batch.column_by_name(name).and_then(|column| Self::of(column.as_ref()))
    }

    /// Row `row`'s text ("" when null).
    pub fn value(&self, row: usize) -> &'a str {
        match self {
            Self::Plain(strings) if strings.is_valid(row) => strings.value(row),
            Self::Dictionary { keys, values } if keys.is_valid(row) => usize::try_from(keys.value(row)).ok().filter(|&k| k < values.len()).map_or("", |k| values.value(k)),
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, DictionaryArray};

    use super::*;

    #[test]
    fn plain_and_dictionary_columns_read_the_same_rows() {
        let rows = vec![Some("ok"), None, Some("failed"), Some("ok")];
        let plain: ArrayRef = Arc::new(StringArray::from(rows.clone()));
        let dictionary: ArrayRef = Arc::new(rows.iter().copied().collect::<DictionaryArray<Int32Type>>());
        for array in [&plain, &dictionary] {
            let column = TextColumn::of(array.as_ref()).expect("a text column");
            let read: Vec<&str> = (0..array.len()).map(|row| column.value(row)).collect();
            assert_eq!(read, ["ok", "", "failed", "ok"], "{:?}", array.data_type());
        }
        assert!(TextColumn::of(&Int32Array::from(vec![1])).is_none());
    }
}
