//! Declared, typed parameters: each parameter of a kind is one [`Param`] constant, from which both the
//! kind's [`ParamSpec`] (what the runner checks and `wspace kinds` lists) and its typed read come.
//!
//! ```
//! use wspace_stage_api::{choice_enum, params, Param, Params, StageError};
//!
//! choice_enum! {
//!     /// The hidden nonlinearity.
//!     pub enum Activation { Elu = "elu", Tanh = "tanh" }
//! }
//! params! {
//!     HIDDEN = "hidden": [Int] = [256], "hidden sizes";
//!     ACTIVATION = "activation": choice(Activation) = "elu", "hidden nonlinearity";
//!     SEED = "seed": Int = 0, "seeds the weights";
//! }
//!
//! fn read(p: Params) -> Result<(Vec<usize>, Activation, u64), StageError> {
//!     Ok((p.positive_list(&HIDDEN)?, p.choice(&ACTIVATION)?, p.seed(&SEED)?))
//! }
//! # let values = Param::defaults(&[HIDDEN, ACTIVATION, SEED]);
//! # assert_eq!(read(Params(&values)).unwrap(), (vec![256], Activation::Elu, 0));
//! ```
//!
//! A choice's names come from its enum ([`Choice`], declared with [`choice_enum!`]), so the list in
//! `wspace kinds`, the runner's error for a bad value and the match in the code are one list.

use std::collections::BTreeMap;

use crate::{ParamSpec, ParamType, StageError, Value};

/// A default value a `const` can hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fixed {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
    Ints(&'static [i64]),
    Floats(&'static [f64]),
    Strs(&'static [&'static str]),
    /// `{}`.
    EmptyTable,
}

impl Fixed {
    pub fn value(&self) -> Value {
        match *self {
            Fixed::Bool(b) => Value::Bool(b),
            Fixed::Int(i) => Value::Int(i),
            Fixed::Float(x) => Value::Float(x),
            Fixed::Str(s) => Value::Str(s.to_string()),
            Fixed::Ints(v) => Value::List(v.iter().map(|&i| Value::Int(i)).collect()),
            Fixed::Floats(v) => Value::List(v.iter().map(|&x| Value::Float(x)).collect()),
            Fixed::Strs(v) => Value::List(v.iter().map(|s| Value::Str(s.to_string())).collect()),
            Fixed::EmptyTable => Value::Table(BTreeMap::new()),
        }
    }
}

/// One declared parameter: its name, type, default (`None`: required) and one line of doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: Option<Fixed>,
    pub doc: &'static str,
}

impl Param {
    pub const fn optional(name: &'static str, ty: ParamType, default: Fixed, doc: &'static str) -> Param {
        Param { name, ty, default: Some(default), doc }
    }
    pub const fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Param {
        Param { name, ty, default: None, doc }
    }
    /// One of `names` (a [`Choice`]'s `NAMES`), `default` among them.
    pub const fn choice(name: &'static str, names: &'static [&'static str], default: &'static str, doc: &'static str) -> Param {
        Param { name, ty: ParamType::Choice(names), default: Some(Fixed::Str(default)), doc }
    }
    /// What the runner checks and `wspace kinds` lists.
    pub fn spec(&self) -> ParamSpec {
        ParamSpec { name: self.name, ty: self.ty, default: self.default.map(|d| d.value()), doc: self.doc }
    }
    /// The specs of `params`, in order.
    pub fn specs(params: &[Param]) -> Vec<ParamSpec> {
        params.iter().map(Param::spec).collect()
    }
    /// Every default of `params`.
    pub fn defaults(params: &[Param]) -> BTreeMap<String, Value> {
        defaults(&Param::specs(params))
    }
}

/// Every default of `specs`: a kind's parameters as a pipeline that sets none of them resolves them.
pub fn defaults(specs: &[ParamSpec]) -> BTreeMap<String, Value> {
    specs.iter().filter_map(|s| s.default.clone().map(|d| (s.name.to_string(), d))).collect()
}

/// Declares a kind's parameters as a table, one [`Param`] constant a line:
///
/// ```text
/// params! {
///     COUNT = "count": Int = 100, "number of task rows";        // an integer, default 100
///     LR = "lr": Float = 1e-3, "learning rate";
///     NAME = "name": Str = "", "a string";                       // also Bool, Path
///     RUN = "run": Str, "the shell command";                     // required: no default
///     HIDDEN = "hidden": [Int] = [256, 128], "layer sizes";     // also [Float], [Str], [Path]
///     ACT = "activation": choice(Activation) = "elu", "…";       // a choice_enum!'s names
///     CKPT = "checkpoints": [choice(Checkpoint)] = ["final"], "…";
///     INIT = "init": Any(Str) = "random", "…";                   // checked by the kind; Any(Int) too
///     PARAMS = "params": Table, "free-form values";              // defaults to {}
/// }
/// ```
///
/// Each line may start with a visibility (`pub`, `pub(crate)`).
#[macro_export]
macro_rules! params {
    () => {};
    ($vis:vis $id:ident = $name:literal : Int = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Int, $crate::Fixed::Int($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Float = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Float, $crate::Fixed::Float($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Bool = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Bool, $crate::Fixed::Bool($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Str = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Str, $crate::Fixed::Str($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Path = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Path, $crate::Fixed::Str($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Str, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::required($name, $crate::ParamType::Str, $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Path, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::required($name, $crate::ParamType::Path, $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : [Int] = [$($d:literal),*], $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param =
            $crate::Param::optional($name, $crate::ParamType::List(&$crate::ParamType::Int), $crate::Fixed::Ints(&[$($d),*]), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : [Float] = [$($d:literal),*], $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param =
            $crate::Param::optional($name, $crate::ParamType::List(&$crate::ParamType::Float), $crate::Fixed::Floats(&[$($d),*]), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : [Str] = [$($d:literal),*], $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param =
            $crate::Param::optional($name, $crate::ParamType::List(&$crate::ParamType::Str), $crate::Fixed::Strs(&[$($d),*]), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : [Path] = [$($d:literal),*], $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param =
            $crate::Param::optional($name, $crate::ParamType::List(&$crate::ParamType::Path), $crate::Fixed::Strs(&[$($d),*]), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : choice($e:ty) = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::choice($name, <$e as $crate::Choice>::NAMES, $d, $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : [choice($e:ty)] = [$($d:literal),*], $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional(
            $name,
            $crate::ParamType::List(&$crate::ParamType::Choice(<$e as $crate::Choice>::NAMES)),
            $crate::Fixed::Strs(&[$($d),*]),
            $doc,
        );
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Any(Int) = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Any, $crate::Fixed::Int($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Any(Str) = $d:literal, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Any, $crate::Fixed::Str($d), $doc);
        $crate::params!($($rest)*);
    };
    ($vis:vis $id:ident = $name:literal : Table, $doc:literal; $($rest:tt)*) => {
        $vis const $id: $crate::Param = $crate::Param::optional($name, $crate::ParamType::Table, $crate::Fixed::EmptyTable, $doc);
        $crate::params!($($rest)*);
    };
}

/// An enum parameter that knows its names, declared with [`choice_enum!`].
pub trait Choice: Sized + Copy + PartialEq + 'static {
    /// Every value with its name, in declaration order.
    const ALL: &'static [(Self, &'static str)];
    /// The names alone, in the same order (what [`Param::choice`] takes).
    const NAMES: &'static [&'static str];
    /// This value's name.
    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(v, _)| *v == self).map_or("", |(_, n)| n)
    }
    /// The value of this name.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }
}

/// Declares an enum whose variants are the choices of a parameter: `Variant = "name"`. It derives
/// `Debug, Clone, Copy, PartialEq, Eq` and implements [`Choice`].
#[macro_export]
macro_rules! choice_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }
        impl $crate::Choice for $name {
            const ALL: &'static [(Self, &'static str)] = &[$(($name::$variant, $text)),+];
            const NAMES: &'static [&'static str] = &[$($text),+];
        }
    };
}

/// A stage's resolved parameters (defaults filled in, `Path` values absolute), with typed accessors
/// that take the parameter's declaration and whose errors name it. [`crate::StageKind::validate`]
/// gets one before anything runs; a running stage gets the same through
/// [`crate::StageContext::view`], so one `from_params(Params)` per kind serves both.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a>(pub &'a BTreeMap<String, Value>);

impl<'a> Params<'a> {
    /// The value as given.
    pub fn value(&self, p: &Param) -> Result<&'a Value, StageError> {
        self.0.get(p.name).ok_or_else(|| StageError::param(p.name, "is missing"))
    }
    pub fn int(&self, p: &Param) -> Result<i64, StageError> {
        self.value(p)?.as_i64().ok_or_else(|| StageError::param(p.name, "must be an integer"))
    }
    /// A finite number (integers are accepted).
    pub fn float(&self, p: &Param) -> Result<f64, StageError> {
        match self.value(p)?.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            Some(x) => Err(StageError::param(p.name, format!("must be a finite number, got {x}"))),
            None => Err(StageError::param(p.name, "must be a number")),
        }
    }
    pub fn str(&self, p: &Param) -> Result<&'a str, StageError> {
        self.value(p)?.as_str().ok_or_else(|| StageError::param(p.name, "must be a string"))
    }
    pub fn bool(&self, p: &Param) -> Result<bool, StageError> {
        self.value(p)?.as_bool().ok_or_else(|| StageError::param(p.name, "must be a boolean"))
    }
    /// One of `E`'s names, as its value.
    pub fn choice<E: Choice>(&self, p: &Param) -> Result<E, StageError> {
        let name = self.str(p)?;
        E::from_name(name).ok_or_else(|| {
            let known = E::NAMES.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
            StageError::param(p.name, format!("must be one of {known}, got \"{name}\""))
        })
    }
    /// A list of `E`'s names, as values, without repeats, in the order given.
    pub fn choice_list<E: Choice>(&self, p: &Param) -> Result<Vec<E>, StageError> {
        let list = self.value(p)?.as_list().ok_or_else(|| StageError::param(p.name, "must be a list"))?;
        let mut out = Vec::new();
        for v in list {
            let e = v.as_str().and_then(E::from_name).ok_or_else(|| {
                let known = E::NAMES.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
                StageError::param(p.name, format!("must list names among {known}, found {v}"))
            })?;
            if !out.contains(&e) {
                out.push(e);
            }
        }
        Ok(out)
    }
    /// A seed: an integer ≥ 0.
    pub fn seed(&self, p: &Param) -> Result<u64, StageError> {
        let v = self.int(p)?;
        u64::try_from(v).map_err(|_| StageError::param(p.name, format!("must be ≥ 0 (a seed), got {v}")))
    }
    /// An integer ≥ 0.
    pub fn count(&self, p: &Param) -> Result<usize, StageError> {
        let v = self.int(p)?;
        usize::try_from(v).map_err(|_| StageError::param(p.name, format!("must be ≥ 0, got {v}")))
    }
    /// An integer ≥ 1.
    pub fn positive(&self, p: &Param) -> Result<usize, StageError> {
        match self.int(p)? {
            v if v >= 1 => usize::try_from(v).map_err(|_| StageError::param(p.name, format!("is out of range: {v}"))),
            v => Err(StageError::param(p.name, format!("must be ≥ 1, got {v}"))),
        }
    }
    /// A finite number > 0 (learning rates, temperatures).
    pub fn positive_float(&self, p: &Param) -> Result<f64, StageError> {
        match self.float(p)? {
            x if x > 0.0 => Ok(x),
            x => Err(StageError::param(p.name, format!("must be > 0, got {x}"))),
        }
    }
    /// A finite number ≥ 0 (weight decay, noise scales).
    pub fn non_negative(&self, p: &Param) -> Result<f64, StageError> {
        match self.float(p)? {
            x if x >= 0.0 => Ok(x),
            x => Err(StageError::param(p.name, format!("must be ≥ 0, got {x}"))),
        }
    }
    /// A list of integers ≥ 1 (layer sizes).
    pub fn positive_list(&self, p: &Param) -> Result<Vec<usize>, StageError> {
        let list = self.value(p)?.as_list().ok_or_else(|| StageError::param(p.name, "must be a list of integers"))?;
        list.iter()
            .map(|v| match v.as_i64() {
                Some(n) if n >= 1 => usize::try_from(n).map_err(|_| StageError::param(p.name, format!("is out of range: {n}"))),
                _ => Err(StageError::param(p.name, format!("every size must be an integer ≥ 1, found {v}"))),
            })
            .collect()
    }
    /// A list of finite numbers.
    pub fn float_list(&self, p: &Param) -> Result<Vec<f64>, StageError> {
        let list = self.value(p)?.as_list().ok_or_else(|| StageError::param(p.name, "must be a list of numbers"))?;
        list.iter()
            .map(|v| v.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| StageError::param(p.name, "must be a list of finite numbers"))
    }
    /// A number in [0, 1] (or [0, 1) when `max_exclusive`).
    pub fn fraction(&self, p: &Param, max_exclusive: bool) -> Result<f64, StageError> {
        let f = self.float(p)?;
        if f >= 0.0 && if max_exclusive { f < 1.0 } else { f <= 1.0 } {
            return Ok(f);
        }
        let range = if max_exclusive { "[0, 1)" } else { "[0, 1]" };
        Err(StageError::param(p.name, format!("must be in {range}, got {f}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    choice_enum! {
        enum Colour { Red = "red", Green = "green" }
    }

    params! {
        LR = "lr": Float = 0.0, "";
        DECAY = "decay": Float = -1.0, "";
        OK = "ok": Int = 2, "";
        HIDDEN = "hidden": [Int] = [4, 0], "";
        SIZES = "sizes": [Int] = [4, 2], "";
        SEED = "seed": Int = -3, "";
        COLOUR = "colour": choice(Colour) = "green", "";
        COLOURS = "colours": [choice(Colour)] = ["green", "red", "green"], "";
    }

    #[test]
    fn a_choice_list_reads_each_name_once_in_order_and_names_a_stranger() {
        let mut map = Param::defaults(&[COLOURS]);
        assert_eq!(Params(&map).choice_list::<Colour>(&COLOURS).unwrap(), vec![Colour::Green, Colour::Red]);
        map.insert("colours".into(), Value::List(vec![Value::Str("red".into()), Value::Str("blue".into())]));
        let e = Params(&map).choice_list::<Colour>(&COLOURS).unwrap_err().to_string();
        assert_eq!(e, "parameter `colours` must list names among \"red\", \"green\", found \"blue\"");
        map.insert("colours".into(), Value::Str("red".into()));
        assert_eq!(Params(&map).choice_list::<Colour>(&COLOURS).unwrap_err().to_string(), "parameter `colours` must be a list");
    }

    #[test]
    fn numeric_constraints_name_the_parameter_and_the_value() {
        let map = Param::defaults(&[LR, DECAY, OK, HIDDEN, SIZES]);
        let p = Params(&map);
        assert_eq!(p.positive_float(&LR).unwrap_err().to_string(), "parameter `lr` must be > 0, got 0");
        assert_eq!(p.non_negative(&DECAY).unwrap_err().to_string(), "parameter `decay` must be ≥ 0, got -1");
        assert_eq!((p.positive_float(&OK).unwrap(), p.non_negative(&OK).unwrap()), (2.0, 2.0));
        assert_eq!(
            p.positive_list(&HIDDEN).unwrap_err().to_string(),
            "parameter `hidden` every size must be an integer ≥ 1, found 0"
        );
        assert_eq!(p.positive_list(&SIZES).unwrap(), vec![4, 2]);
        assert!(p.positive_list(&OK).is_err());
    }

    #[test]
    fn a_negative_seed_is_refused_with_the_parameters_name() {
        let map = Param::defaults(&[SEED, OK]);
        let p = Params(&map);
        assert_eq!(p.seed(&SEED).unwrap_err().to_string(), "parameter `seed` must be ≥ 0 (a seed), got -3");
        assert_eq!(p.seed(&OK).unwrap(), 2);
    }

    #[test]
    fn a_choice_reads_as_its_enum_and_its_spec_lists_the_enums_names() {
        let mut map = Param::defaults(&[COLOUR]);
        assert_eq!(Params(&map).choice::<Colour>(&COLOUR).unwrap(), Colour::Green);
        assert_eq!(COLOUR.spec().ty, ParamType::Choice(&["red", "green"]));
        assert_eq!((Colour::Red.name(), Colour::from_name("green")), ("red", Some(Colour::Green)));
        map.insert("colour".into(), Value::Str("blue".into()));
        let e = Params(&map).choice::<Colour>(&COLOUR).unwrap_err().to_string();
        assert_eq!(e, "parameter `colour` must be one of \"red\", \"green\", got \"blue\"");
    }

    #[test]
    fn specs_carry_the_declared_type_and_default() {
        let spec = HIDDEN.spec();
        assert_eq!(
            (spec.name, spec.ty, spec.default),
            ("hidden", ParamType::List(&ParamType::Int), Some(Value::List(vec![Value::Int(4), Value::Int(0)])))
        );
        assert_eq!(Param::required("x", ParamType::Path, "").spec().default, None);
    }
}
