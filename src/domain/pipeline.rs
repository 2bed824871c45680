//! Pipelines: ordered stage definitions, the default pipeline, and the stage
//! machine every deal moves along.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::domain::error::{Error, FieldError, ValidationErrors};

/// Generates a key newtype: 1–64 characters of `a-z`, `0-9` and `_`.
macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident, field = $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Cow<'static, str>);

        impl $name {
            /// Validates a key: 1–64 characters of `a-z`, `0-9` and `_`.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                Self::parse_field($field, value)
            }

            /// Like [`parse`](Self::parse), reporting the error under `field`.
            pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
                let v = value.trim();
                if v.is_empty() {
                    return Err(FieldError::new(field, "required", "must not be empty"));
                }
                if v.len() > 64 {
                    return Err(FieldError::new(field, "too_long", "must have at most 64 characters"));
                }
                if !v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                    return Err(FieldError::new(
                        field,
                        "invalid_format",
                        format!("may hold only a-z, 0-9 and _, got {v:?}"),
                    ));
                }
                Ok(Self(Cow::Owned(v.to_string())))
            }

            /// The key.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A key known when the program is written. It must be valid
            /// (what [`parse`](Self::parse) accepts): this is not checked.
            pub(crate) const fn from_static(s: &'static str) -> Self {
                Self(Cow::Borrowed(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(v: String) -> Result<Self, Self::Error> {
                Self::parse(&v)
            }
        }

        impl From<$name> for String {
            fn from(k: $name) -> String {
                k.0.into_owned()
            }
        }

        impl AsRef<$name> for $name {
            fn as_ref(&self) -> &$name {
                self
            }
        }

        impl std::str::FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

key_type!(
    /// The key of a pipeline (`"default"`, `"enterprise"`).
    PipelineKey, field = "pipeline"
);
key_type!(
    /// The key of a stage within a pipeline (`"qualified"`, `"closed_won"`).
    StageKey, field = "stage"
);

impl PipelineKey {
    /// The key of the default pipeline, `default`.
    pub const DEFAULT: PipelineKey = PipelineKey::from_static("default");

    /// The key of the default pipeline ([`PipelineKey::DEFAULT`]).
    pub fn default_pipeline() -> Self {
        Self::DEFAULT
    }
}

/// The stages of the default pipeline ([`Pipeline::default_pipeline`]).
impl StageKey {
    /// `qualified`: open, 20 %. Where a new deal starts.
    pub const QUALIFIED: StageKey = StageKey::from_static("qualified");
    /// `proposal`: open, 40 %.
    pub const PROPOSAL: StageKey = StageKey::from_static("proposal");
    /// `negotiation`: open, 70 %.
    pub const NEGOTIATION: StageKey = StageKey::from_static("negotiation");
    /// `closed_won`: won, 100 %.
    pub const CLOSED_WON: StageKey = StageKey::from_static("closed_won");
    /// `closed_lost`: lost, 0 %; entering it takes a reason.
    pub const CLOSED_LOST: StageKey = StageKey::from_static("closed_lost");
}

/// Whether a stage is still open, or closes the deal as won or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The deal is being worked on.
    Open,
    /// The deal is won (entering stamps `won_at`).
    Won,
    /// The deal is lost (entering needs a reason and stamps `lost_at`).
    Lost,
}

/// One stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDef {
    /// Its key, unique in the pipeline.
    pub key: StageKey,
    /// What people see.
    pub label: String,
    /// The chance, in percent, that a deal in this stage is won. Won stages
    /// are 100, lost stages 0.
    pub win_probability: u8,
    /// Open, won or lost.
    pub kind: StageKind,
}

impl StageDef {
    /// A stage definition (checked when the pipeline is built).
    pub fn new(key: StageKey, label: &str, win_probability: u8, kind: StageKind) -> Self {
        StageDef {
            key,
            label: label.to_string(),
            win_probability,
            kind,
        }
    }
}

/// A pipeline: an ordered list of stages. Deals start in an open stage, may
/// move between open stages in either direction, close into a won or lost
/// stage from any open stage, and leave a closed stage only through a reopen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pipeline {
    key: PipelineKey,
    label: String,
    stages: Vec<StageDef>,
}

impl Pipeline {
    /// Builds a pipeline, checking that stage keys are unique, that there is
    /// at least one open, one won and one lost stage, that probabilities are
    /// 0–100, won stages 100 and lost stages 0.
    pub fn new(
        key: PipelineKey,
        label: &str,
        stages: Vec<StageDef>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if label.trim().is_empty() {
            errors.push(FieldError::new("label", "required", "must not be empty"));
        }
        for kind in [StageKind::Open, StageKind::Won, StageKind::Lost] {
            if !stages.iter().any(|s| s.kind == kind) {
                errors.push(FieldError::new(
                    "stages",
                    "required",
                    format!("needs at least one {kind:?} stage").to_lowercase(),
                ));
            }
        }
        for (i, s) in stages.iter().enumerate() {
            let field = format!("stages[{i}]");
            if stages[..i].iter().any(|o| o.key == s.key) {
                errors.push(FieldError::new(
                    &field,
                    "duplicate",
                    format!("stage key {} appears twice", s.key),
                ));
            }
            if s.win_probability > 100 {
                errors.push(FieldError::new(
                    &field,
                    "out_of_range",
                    "win probability must be 0 to 100",
                ));
            }
            match s.kind {
                StageKind::Won if s.win_probability != 100 => errors.push(FieldError::new(
                    &field,
                    "out_of_range",
                    "a won stage has win probability 100",
                )),
                StageKind::Lost if s.win_probability != 0 => errors.push(FieldError::new(
                    &field,
                    "out_of_range",
                    "a lost stage has win probability 0",
                )),
                _ => {}
            }
        }
        errors.finish(|| Pipeline {
            key,
            label: label.trim().to_string(),
            stages,
        })
    }

    /// The default pipeline: qualified (20 %) → proposal (40 %) →
    /// negotiation (70 %) → closed_won | closed_lost.
    pub fn default_pipeline() -> Pipeline {
        let stage = |k: StageKey, label: &str, p: u8, kind| StageDef::new(k, label, p, kind);
        Pipeline {
            key: PipelineKey::default_pipeline(),
            label: "Sales".to_string(),
            stages: vec![
                stage(StageKey::QUALIFIED, "Qualified", 20, StageKind::Open),
                stage(StageKey::PROPOSAL, "Proposal", 40, StageKind::Open),
                stage(StageKey::NEGOTIATION, "Negotiation", 70, StageKind::Open),
                stage(StageKey::CLOSED_WON, "Closed won", 100, StageKind::Won),
                stage(StageKey::CLOSED_LOST, "Closed lost", 0, StageKind::Lost),
            ],
        }
    }

    /// Its key.
    pub fn key(&self) -> &PipelineKey {
        &self.key
    }

    /// Its label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its stages, in order.
    pub fn stages(&self) -> &[StageDef] {
        &self.stages
    }

    /// One stage by key.
    pub fn stage(&self, key: &StageKey) -> Option<&StageDef> {
        self.stages.iter().find(|s| &s.key == key)
    }

    /// The stage new deals start in when none is given: the first open stage.
    pub fn first_open_stage(&self) -> &StageDef {
        // `new` guarantees an open stage.
        self.stages
            .iter()
            .find(|s| s.kind == StageKind::Open)
            .unwrap_or(&self.stages[0])
    }

    /// The stage a deal is won in: the pipeline's first won stage.
    pub fn won_stage(&self) -> &StageDef {
        // `new` guarantees a won stage.
        self.stages
            .iter()
            .find(|s| s.kind == StageKind::Won)
            .unwrap_or(&self.stages[0])
    }

    /// The stage a deal is lost in: the pipeline's first lost stage.
    pub fn lost_stage(&self) -> &StageDef {
        // `new` guarantees a lost stage.
        self.stages
            .iter()
            .find(|s| s.kind == StageKind::Lost)
            .unwrap_or(&self.stages[0])
    }

    /// Checks a stage key belongs to this pipeline, reporting under `field`.
    pub fn require_stage(&self, field: &str, key: &StageKey) -> Result<&StageDef, FieldError> {
        self.stage(key).ok_or_else(|| {
            FieldError::new(
                field,
                "unknown_value",
                format!("stage {key} is not in pipeline {}", self.key),
            )
        })
    }

    /// The stage machine: may a deal in `from` move to `to`?
    ///
    /// Refused moves are [`Error::InvalidTransition`]: staying in the same
    /// stage, leaving a closed stage (use a reopen), entering a lost stage
    /// without a reason. A stage that is not in the pipeline is a validation
    /// error.
    pub fn check_move(
        &self,
        from: &StageKey,
        to: &StageKey,
        has_lost_reason: bool,
    ) -> Result<StageKind, Error> {
        let from_def = self
            .require_stage("stage", from)
            .map_err(ValidationErrors::single)?;
        let to_def = self
            .require_stage("stage", to)
            .map_err(ValidationErrors::single)?;
        let refuse = |why: &str| Error::InvalidTransition {
            from: from.clone(),
            to: to.clone(),
            why: why.to_string(),
        };
        if from == to {
            return Err(refuse("the deal is already in that stage"));
        }
        if from_def.kind != StageKind::Open {
            return Err(refuse("the deal is closed; reopen it first"));
        }
        match to_def.kind {
            StageKind::Lost if !has_lost_reason => Err(refuse("losing a deal needs a lost reason")),
            StageKind::Open | StageKind::Won if has_lost_reason => {
                Err(refuse("a lost reason is only given when a deal is lost"))
            }
            kind => Ok(kind),
        }
    }

    /// May a deal in `from` be reopened into `to`? Only a closed deal can be
    /// reopened, and only into an open stage.
    pub fn check_reopen(&self, from: &StageKey, to: &StageKey) -> Result<(), Error> {
        let from_def = self
            .require_stage("stage", from)
            .map_err(ValidationErrors::single)?;
        let to_def = self
            .require_stage("stage", to)
            .map_err(ValidationErrors::single)?;
        let refuse = |why: &str| Error::InvalidTransition {
            from: from.clone(),
            to: to.clone(),
            why: why.to_string(),
        };
        if from_def.kind == StageKind::Open {
            return Err(refuse("only a closed deal can be reopened"));
        }
        if to_def.kind != StageKind::Open {
            return Err(refuse("a deal is reopened into an open stage"));
        }
        Ok(())
    }
}

/// The pipelines a store knows, by key. Always holds the default pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipelines(BTreeMap<PipelineKey, Pipeline>);

impl Default for Pipelines {
    fn default() -> Self {
        let p = Pipeline::default_pipeline();
        Pipelines(BTreeMap::from([(p.key.clone(), p)]))
    }
}

impl Pipelines {
    /// Adds (or replaces) a pipeline. The default pipeline may be replaced too.
    pub fn with(mut self, pipeline: Pipeline) -> Self {
        self.0.insert(pipeline.key.clone(), pipeline);
        self
    }

    /// A pipeline by key.
    pub fn get(&self, key: &PipelineKey) -> Option<&Pipeline> {
        self.0.get(key)
    }

    /// A pipeline by key, or a validation error naming `field`.
    pub fn require(&self, field: &str, key: &PipelineKey) -> Result<&Pipeline, FieldError> {
        self.get(key)
            .ok_or_else(|| FieldError::new(field, "unknown_value", format!("no pipeline {key}")))
    }

    /// Every pipeline, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Pipeline> {
        self.0.values()
    }
}
