//! The parameter columns of a job's loss table, typed from its spec: one `param_<name>` column
//! per parameter name, in first-seen order. Ints and floats of one name widen to float64; any other
//! mix of types falls back to utf8 holding the JSON text of each value.

use crate::pyjson::{self, PyObject, PyValue};
use crate::study::SimJobSpec;

/// The Arrow type of a parameter column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// int64.
    Int,
    /// float64.
    Float,
    /// utf8.
    Text,
    /// bool.
    Bool,
}

/// One parameter column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamColumn {
    /// The parameter's name.
    pub name: String,
    /// Its column type.
    pub kind: ParamType,
}

impl ParamColumn {
    /// The column name, `param_<name>`; a parameter named `id` becomes `param_id_`, since
    /// `param_id` is the parameter-set id.
    pub fn column_name(&self) -> String {
        if self.name == "id" {
            "param_id_".to_owned()
        } else {
            format!("param_{}", self.name)
        }
    }
}

fn type_of(value: &PyValue) -> ParamType {
    match value {
        PyValue::Int(_) => ParamType::Int,
        PyValue::Float(_) => ParamType::Float,
        PyValue::Bool(_) => ParamType::Bool,
        // Ints beyond 64 bits, strings, nulls and containers: text.
        _ => ParamType::Text,
    }
}

fn unify(a: ParamType, b: ParamType) -> ParamType {
    match (a, b) {
        (x, y) if x == y => x,
        (ParamType::Int, ParamType::Float) | (ParamType::Float, ParamType::Int) => ParamType::Float,
        _ => ParamType::Text,
    }
}

/// Parameter columns typed as parameter sets are seen, for specs read as a stream.
#[derive(Debug, Clone, Default)]
pub struct ColumnTypes {
    columns: Vec<ParamColumn>,
}

impl ColumnTypes {
    /// Takes in the values of one parameter set.
    pub fn add(&mut self, values: &PyObject) {
        for (name, value) in values.iter() {
            let kind = type_of(value);
            match self.columns.iter_mut().find(|c| c.name == name) {
                Some(column) => column.kind = unify(column.kind, kind),
                None => self.columns.push(ParamColumn { name: name.to_owned(), kind }),
            }
        }
    }

    /// The columns, in first-seen order.
    pub fn finish(self) -> Vec<ParamColumn> {
        self.columns
    }
}

/// The parameter columns of `job`.
pub fn param_columns(job: &SimJobSpec) -> Vec<ParamColumn> {
    let mut types = ColumnTypes::default();
    for group in job.task_groups() {
        types.add(group.values);
    }
    types.finish()
}

/// A value as the text of a utf8 parameter column: strings as they are, others as JSON.
pub fn text_of(value: &PyValue) -> String {
    value.as_str().map_or_else(|| pyjson::to_canonical(value), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_named_id_does_not_collide_with_param_id() {
        let column = ParamColumn {
            name: "id".into(),
            kind: ParamType::Int,
        };
        assert_eq!(column.column_name(), "param_id_");
        let beta = ParamColumn {
            name: "beta".into(),
            kind: ParamType::Float,
        };
        assert_eq!(beta.column_name(), "param_beta");
    }
}
