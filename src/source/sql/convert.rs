//! Rows to target groups: column checks, each database's values as label
//! text (the table in [`crate::source::sql`]), grouping and ordering.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use sqlx::mysql::types::{MySqlTime, MySqlTimeSign};
use sqlx::mysql::{MySql, MySqlValueRef};
use sqlx::postgres::{PgTypeInfo, PgTypeKind, PgValueRef};
use sqlx::sqlite::{Sqlite, SqliteValueRef};
use sqlx::{Decode, Type, TypeInfo, ValueRef};

use super::text::{
    civil_from_days, float32, float64, fraction, le_f64, le_integer, mysql_datetime, pg_numeric,
    PG_EPOCH_DAYS,
};
use super::SqlError;
use crate::targetgroup::{is_valid_label_name, LabelSet, TargetGroup};

/// The column holding each row's target.
pub const ADDRESS: &str = "__address__";

/// How many duplicate-row warnings are listed one by one.
const MAX_WARNINGS: usize = 10;

/// Checks the result's column names; returns the index of `__address__`.
pub fn check_columns(names: &[&str]) -> Result<usize, SqlError> {
    for (i, name) in names.iter().enumerate() {
        if !is_valid_label_name(name) {
            return Err(SqlError::new(
                "column",
                format!(
                    "column {name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*): rename it with AS"
                ),
            ));
        }
        if names[..i].contains(name) {
            return Err(SqlError::new(
                "column",
                format!("column {name:?} appears more than once"),
            ));
        }
    }
    names.iter().position(|n| *n == ADDRESS).ok_or_else(|| {
        let why = if names.is_empty() {
            "it returns no columns: it must be a SELECT".to_string()
        } else {
            format!("columns: {}", names.join(", "))
        };
        SqlError::new(
            "column",
            format!("the query returns no {ADDRESS} column ({why})"),
        )
    })
}

/// Collects rows (as label text) into groups: rows with the same labels
/// form one group; groups sorted by their (name, value) lists, targets
/// sorted and deduplicated.
#[derive(Debug)]
pub struct Grouper {
    columns: Vec<String>,
    address: usize,
    groups: BTreeMap<Vec<(String, String)>, BTreeSet<String>>,
    rows: usize,
    duplicates: usize,
    warnings: Vec<String>,
}

impl Grouper {
    /// A grouper for rows with these (checked) columns.
    pub fn new(columns: &[&str]) -> Result<Grouper, SqlError> {
        let address = check_columns(columns)?;
        Ok(Grouper {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            address,
            groups: BTreeMap::new(),
            rows: 0,
            duplicates: 0,
            warnings: Vec::new(),
        })
    }

    /// Adds one row: `values[i]` is column `i`'s text, `None` for NULL.
    /// A NULL or empty `__address__` fails the whole query.
    pub fn push(&mut self, values: Vec<Option<String>>) -> Result<(), SqlError> {
        self.rows += 1;
        let row = self.rows;
        let mut address = None;
        let mut labels = Vec::with_capacity(values.len().saturating_sub(1));
        for (i, value) in values.into_iter().enumerate() {
            if i == self.address {
                address = value;
            } else if let (Some(value), Some(name)) = (value, self.columns.get(i)) {
                labels.push((name.clone(), value));
            }
        }
        let address = match address {
            None => {
                return Err(SqlError::new(
                    "value",
                    format!("row {row}: {ADDRESS} is NULL"),
                ))
            }
            Some(a) if a.is_empty() => {
                return Err(SqlError::new(
                    "value",
                    format!("row {row}: {ADDRESS} is empty"),
                ))
            }
            Some(a) => a,
        };
        labels.sort();
        let targets = self.groups.entry(labels).or_default();
        if targets.contains(&address) {
            self.duplicates += 1;
            if self.warnings.len() < MAX_WARNINGS {
                self.warnings.push(format!(
                    "row {row}: target {address:?} repeats an earlier row with the same labels; served once"
                ));
            }
        } else {
            targets.insert(address);
        }
        Ok(())
    }

    /// The groups, rows seen and warnings.
    pub fn finish(mut self) -> (Vec<TargetGroup>, usize, Vec<String>) {
        if self.duplicates > self.warnings.len() {
            self.warnings.push(format!(
                "{} more duplicate rows",
                self.duplicates - self.warnings.len()
            ));
        }
        let groups = self
            .groups
            .into_iter()
            .map(|(labels, targets)| TargetGroup {
                targets: targets.into_iter().collect(),
                labels: LabelSet(labels.into_iter().collect()),
            })
            .collect();
        (groups, self.rows, self.warnings)
    }
}

fn binary(column: &str) -> SqlError {
    SqlError::new(
        "column",
        format!("column {column:?} is binary: cast it to text in SQL"),
    )
}

fn json(column: &str) -> SqlError {
    SqlError::new(
        "column",
        format!("column {column:?} is JSON: cast it to text in SQL or extract the fields you need"),
    )
}

fn unsupported(column: &str, ty: &str) -> SqlError {
    SqlError::new(
        "column",
        format!("column {column:?} has type {ty}, which sdbridge does not convert: cast it to text in SQL"),
    )
}

fn bad_value(column: &str, why: impl std::fmt::Display) -> SqlError {
    SqlError::new("value", format!("column {column:?}: {why}"))
}

/// A MySQL/MariaDB value (binary protocol) as label text.
pub fn mysql_value(column: &str, value: MySqlValueRef<'_>) -> Result<Option<String>, SqlError> {
    let ty = value.type_info().into_owned();
    let name = ty.name();
    let bytes =
        || <&[u8] as Decode<MySql>>::decode(value.clone()).map_err(|e| bad_value(column, e));
    if let "DATE" | "DATETIME" | "TIMESTAMP" = name {
        // sqlx calls a zero date NULL; its bytes (a zero length) are there.
        let Ok(raw) = <&[u8] as Decode<MySql>>::decode(value.clone()) else {
            return Ok(None);
        };
        return mysql_datetime(raw, name == "DATE")
            .map(Some)
            .ok_or_else(|| bad_value(column, format!("bad {name}")));
    }
    if value.is_null() {
        return Ok(None);
    }
    let text = match name {
        "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR"
        | "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => {
            let unsigned = <u64 as Type<MySql>>::compatible(&ty);
            le_integer(bytes()?, unsigned).ok_or_else(|| bad_value(column, "bad integer"))?
        }
        "FLOAT" => match bytes()? {
            &[a, b, c, d] => float32(f32::from_le_bytes([a, b, c, d])),
            other => float64(le_f64(other).ok_or_else(|| bad_value(column, "bad FLOAT"))?),
        },
        "DOUBLE" => float64(le_f64(bytes()?).ok_or_else(|| bad_value(column, "bad DOUBLE"))?),
        "DECIMAL" | "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT"
        | "ENUM" | "SET" => std::str::from_utf8(bytes()?)
            .map_err(|_| bad_value(column, "not UTF-8"))?
            .to_string(),
        "TIME" => {
            let t = <MySqlTime as Decode<MySql>>::decode(value.clone())
                .map_err(|e| bad_value(column, e))?;
            let sign = if t.sign() == MySqlTimeSign::Negative && !t.is_zero() {
                "-"
            } else {
                ""
            };
            format!(
                "{sign}{:02}:{:02}:{:02}{}",
                t.hours(),
                t.minutes(),
                t.seconds(),
                fraction(t.microseconds())
            )
        }
        "BIT" => {
            let bytes = bytes()?;
            if bytes.len() > 8 {
                return Err(bad_value(column, "BIT wider than 64 bits"));
            }
            bytes
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
                .to_string()
        }
        // Binary only in the `binary` character set (63): text in a `_bin`
        // collation carries the BINARY flag too (the patched driver, see
        // vendor/sqlx-mysql, and later sqlx releases tell them apart).
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            if !<&str as Type<MySql>>::compatible(&ty) {
                return Err(SqlError::new(
                    "column",
                    format!("column {column:?} is binary: cast it to text in SQL, e.g. CAST({column} AS CHAR)"),
                ));
            }
            utf8(column, bytes()?)?
        }
        "JSON" => return Err(json(column)),
        "NULL" => return Ok(None),
        other => return Err(unsupported(column, other)),
    };
    Ok(Some(text))
}

/// A PostgreSQL value (binary format) as label text.
pub fn pg_value(column: &str, value: PgValueRef<'_>) -> Result<Option<String>, SqlError> {
    if value.is_null() {
        return Ok(None);
    }
    let ty = value.type_info().into_owned();
    let bytes = value.as_bytes().map_err(|e| bad_value(column, e))?;
    pg_text(column, &ty, bytes).map(Some)
}

fn pg_text(column: &str, ty: &PgTypeInfo, bytes: &[u8]) -> Result<String, SqlError> {
    match ty.kind() {
        PgTypeKind::Domain(base) => return pg_text(column, base, bytes),
        PgTypeKind::Enum(_) => return utf8(column, bytes),
        _ => {}
    }
    let bad = || bad_value(column, format!("bad {} value", ty.name()));
    let be = |n: usize| -> Result<[u8; 8], SqlError> {
        let mut out = [0u8; 8];
        if bytes.len() != n {
            return Err(bad());
        }
        out[8 - n..].copy_from_slice(bytes);
        Ok(out)
    };
    let signed = |n: usize| -> Result<i64, SqlError> {
        let raw = be(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(i64::from_be_bytes(raw) << shift >> shift)
    };
    Ok(match ty.oid().map(|o| o.0) {
        Some(16) => match bytes {
            [0] => "false".to_string(),
            [_] => "true".to_string(),
            _ => return Err(bad()),
        },
        Some(21) => signed(2)?.to_string(),
        Some(23) => signed(4)?.to_string(),
        Some(20) => signed(8)?.to_string(),
        Some(26) => u64::from_be_bytes(be(4)?).to_string(),
        Some(700) => {
            let raw = be(4)?;
            float32(f32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]))
        }
        Some(701) => float64(f64::from_be_bytes(be(8)?)),
        Some(1700) => pg_numeric(bytes).ok_or_else(bad)?,
        Some(18 | 19 | 25 | 705 | 1042 | 1043) => utf8(column, bytes)?,
        Some(1082) => {
            let days = signed(4)?;
            match days {
                i64::MIN..=-2147483648 => "-infinity".to_string(),
                2147483647.. => "infinity".to_string(),
                _ => {
                    let (y, m, d) = civil_from_days(days + PG_EPOCH_DAYS);
                    check_year(column, y)?;
                    format!("{y:04}-{m:02}-{d:02}")
                }
            }
        }
        Some(1114 | 1184) => match signed(8)? {
            i64::MIN => "-infinity".to_string(),
            i64::MAX => "infinity".to_string(),
            micros => {
                let secs = micros.div_euclid(1_000_000);
                let (y, m, d) = civil_from_days(secs.div_euclid(86_400) + PG_EPOCH_DAYS);
                check_year(column, y)?;
                let sod = secs.rem_euclid(86_400);
                format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}Z",
                    sod / 3600,
                    sod / 60 % 60,
                    sod % 60,
                    fraction(micros.rem_euclid(1_000_000) as u32)
                )
            }
        },
        Some(1083) => {
            let micros = signed(8)?;
            let secs = micros.div_euclid(1_000_000);
            format!(
                "{:02}:{:02}:{:02}{}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                fraction(micros.rem_euclid(1_000_000) as u32)
            )
        }
        Some(2950) => {
            if bytes.len() != 16 {
                return Err(bad());
            }
            let mut s = String::with_capacity(36);
            for (i, b) in bytes.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{b:02x}");
            }
            s
        }
        Some(17) => return Err(binary(column)),
        Some(114 | 3802) => return Err(json(column)),
        _ => return Err(unsupported(column, ty.name())),
    })
}

/// A SQLite value by its storage class.
pub fn sqlite_value(column: &str, value: SqliteValueRef<'_>) -> Result<Option<String>, SqlError> {
    if value.is_null() {
        return Ok(None);
    }
    let class = value.type_info().name().to_string();
    let text = match class.as_str() {
        "INTEGER" => <i64 as Decode<Sqlite>>::decode(value)
            .map_err(|e| bad_value(column, e))?
            .to_string(),
        "REAL" => {
            float64(<f64 as Decode<Sqlite>>::decode(value).map_err(|e| bad_value(column, e))?)
        }
        "TEXT" => <&str as Decode<Sqlite>>::decode(value)
            .map_err(|e| bad_value(column, e))?
            .to_string(),
        "BLOB" => return Err(binary(column)),
        other => return Err(unsupported(column, other)),
    };
    Ok(Some(text))
}

fn utf8(column: &str, bytes: &[u8]) -> Result<String, SqlError> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| bad_value(column, "not UTF-8"))
}

/// RFC 3339 has four-digit years.
fn check_year(column: &str, year: i64) -> Result<(), SqlError> {
    if (0..=9999).contains(&year) {
        Ok(())
    } else {
        Err(bad_value(
            column,
            format!("year {year} is outside 0000-9999"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_checks_name_the_column() {
        assert_eq!(check_columns(&["a", ADDRESS, "b"]).unwrap(), 1);
        let err = |names: &[&str]| check_columns(names).unwrap_err().message;
        assert!(err(&["a-b", ADDRESS]).contains("column \"a-b\" is not a valid label name"));
        assert!(err(&[ADDRESS, "x", "x"]).contains("column \"x\" appears more than once"));
        assert!(err(&["a", "b"]).contains("no __address__ column (columns: a, b)"));
        assert!(
            err(&[]).contains("no __address__ column (it returns no columns: it must be a SELECT)")
        );
    }

    #[test]
    fn groups_are_sorted_and_deduplicated_whatever_the_row_order() {
        let row = |a: &str, dc: Option<&str>, r: &str| {
            vec![
                Some(a.to_string()),
                dc.map(str::to_string),
                Some(r.to_string()),
            ]
        };
        let rows = [
            row("127.0.0.1:2", Some("b"), "x"),
            row("127.0.0.1:1", Some("b"), "x"),
            row("127.0.0.1:3", None, "x"),
            row("127.0.0.1:1", Some("b"), "x"),
            row("127.0.0.1:9", Some("a"), "x"),
        ];
        let build = |rows: &mut dyn Iterator<Item = Vec<Option<String>>>| {
            let mut g = Grouper::new(&[ADDRESS, "dc", "role"]).unwrap();
            for r in rows {
                g.push(r).unwrap();
            }
            g.finish()
        };
        let (groups, n, warnings) = build(&mut rows.clone().into_iter());
        let (reversed, _, _) = build(&mut rows.clone().into_iter().rev());
        assert_eq!(groups, reversed);
        assert_eq!(n, 5);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            groups,
            [
                TargetGroup::new(
                    ["127.0.0.1:9"],
                    LabelSet::from([("dc", "a"), ("role", "x")])
                ),
                TargetGroup::new(
                    ["127.0.0.1:1", "127.0.0.1:2"],
                    LabelSet::from([("dc", "b"), ("role", "x")])
                ),
                TargetGroup::new(["127.0.0.1:3"], LabelSet::from([("role", "x")])),
            ]
        );
    }

    #[test]
    fn null_or_empty_address_fails_naming_the_row() {
        let mut g = Grouper::new(&[ADDRESS]).unwrap();
        g.push(vec![Some("a".into())]).unwrap();
        assert_eq!(
            g.push(vec![None]).unwrap_err().message,
            "row 2: __address__ is NULL"
        );
        let mut g = Grouper::new(&[ADDRESS]).unwrap();
        assert_eq!(
            g.push(vec![Some(String::new())]).unwrap_err().message,
            "row 1: __address__ is empty"
        );
    }
}
