//! A setting that failed validation, as data: which field, the value it
//! had, why it was refused and what is accepted. Config errors and probe
//! settings both report one.
use std::{fmt::Display, ops::RangeInclusive};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub value: String,
    pub reason: String,
    pub accepted: String,
}

impl FieldProblem {
    pub fn new(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
            accepted: accepted.into(),
        }
    }

    /// `value` if it lies in `range`, else "out of range" naming the
    /// bounds in `unit` (e.g. "seconds from 1 to 3600").
    pub fn ranged<T: PartialOrd + Display>(
        field: &str,
        value: T,
        range: RangeInclusive<T>,
        unit: &str,
    ) -> Result<T, Self> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(Self::new(
                field,
                &value,
                "out of range",
                format!("{unit} from {} to {}", range.start(), range.end()),
            ))
        }
    }

    /// The same problem with `prefix.` before the field's name.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranged_names_the_bounds_and_keeps_values_inside() {
        assert_eq!(FieldProblem::ranged("rise", 3, 1..=100, "probes"), Ok(3));
        let e = FieldProblem::ranged("rise", 0, 1..=100, "probes").unwrap_err();
        assert_eq!(
            e,
            FieldProblem::new("rise", 0, "out of range", "probes from 1 to 100")
        );
        assert_eq!(
            e.within("service[0].health").field,
            "service[0].health.rise"
        );
    }
}
