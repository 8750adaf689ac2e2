//! Findings: what the validator says about a config, each with a code, a severity, a location
//! and a message that says what to do.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// How bad a finding is. Errors refuse the config; warnings are reported and the config is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported; the config is still used.
    Warning,
    /// The config is refused.
    Error,
}

/// The stable identifier of a kind of finding.
///
/// Where Istio's `istioctl analyze` has a code for the same mistake, weir uses Istio's code so
/// that runbooks and searches find both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Code {
    /// A destination names a subset that no DestinationRule defines (Istio IST0101).
    UndefinedSubset,
    /// A subset's labels select no endpoint of its host (Istio IST0173).
    SubsetWithoutEndpoints,
    /// A rule comes after a catch-all rule and can never match (Istio IST0130).
    UnreachableRule,
    /// Two VirtualServices claim the same host (Istio IST0109).
    ConflictingHosts,
    /// Under the strict policy the weights of a route do not sum to 100.
    WeightSum,
    /// A weight is negative.
    NegativeWeight,
    /// Every weight of a route is zero: the route can send traffic nowhere.
    ZeroTotalWeight,
    /// The direction guard: a canary subset gets more traffic than the stable subset.
    CanaryMajority,
    /// The step guard: a canary's share grows by more than `weir.dev/max-step` in one change.
    StepTooLarge,
    /// A destination host has no endpoints (no ServiceEntry lists it).
    HostWithoutEndpoints,
    /// Two subsets of one DestinationRule share a name.
    DuplicateSubset,
    /// A regular expression does not compile.
    InvalidRegex,
    /// The YAML itself does not parse, or a field has the wrong type.
    YamlSyntax,
    /// A field weir reads but does not act on.
    NotActedOn,
    /// A value is out of range or malformed (a duration, a percentage, an annotation).
    InvalidValue,
    /// A document of a kind weir does not read.
    UnknownKind,
    /// The config holds no VirtualService: nothing would be routed.
    NoVirtualService,
    /// A rollback is latched: the canary stays at 0% until the rollback is released.
    RollbackLatched,
    /// A canary spec (`kind: Canary`) is malformed or describes an impossible plan.
    InvalidCanarySpec,
    /// The admin state (weights, latches and promotions kept across reloads and restarts)
    /// could not be read, saved or applied as written.
    AdminState,
    /// A config text is over a parsing limit (size, nesting, alias expansion, documents,
    /// rules, hosts).
    ConfigTooLarge,
}

impl Code {
    /// The code as printed: Istio's where one exists, else `WEIRnnn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::UndefinedSubset => "IST0101",
            Code::SubsetWithoutEndpoints => "IST0173",
            Code::UnreachableRule => "IST0130",
            Code::ConflictingHosts => "IST0109",
            Code::WeightSum => "WEIR001",
            Code::NegativeWeight => "WEIR002",
            Code::ZeroTotalWeight => "WEIR003",
            Code::CanaryMajority => "WEIR004",
            Code::StepTooLarge => "WEIR005",
            Code::HostWithoutEndpoints => "WEIR006",
            Code::DuplicateSubset => "WEIR007",
            Code::InvalidRegex => "WEIR008",
            Code::YamlSyntax => "WEIR009",
            Code::NotActedOn => "WEIR010",
            Code::InvalidValue => "WEIR011",
            Code::UnknownKind => "WEIR012",
            Code::NoVirtualService => "WEIR013",
            Code::RollbackLatched => "WEIR014",
            Code::InvalidCanarySpec => "WEIR015",
            Code::AdminState => "WEIR016",
            Code::ConfigTooLarge => "WEIR017",
        }
    }

    /// A short name of the kind of finding, for humans.
    pub fn title(self) -> &'static str {
        match self {
            Code::UndefinedSubset => "undefined subset",
            Code::SubsetWithoutEndpoints => "subset without endpoints",
            Code::UnreachableRule => "unreachable rule",
            Code::ConflictingHosts => "conflicting hosts",
            Code::WeightSum => "weights do not sum to 100",
            Code::NegativeWeight => "negative weight",
            Code::ZeroTotalWeight => "total weight is zero",
            Code::CanaryMajority => "canary above stable",
            Code::StepTooLarge => "canary step too large",
            Code::HostWithoutEndpoints => "host without endpoints",
            Code::DuplicateSubset => "duplicate subset",
            Code::InvalidRegex => "invalid regex",
            Code::YamlSyntax => "invalid YAML",
            Code::NotActedOn => "field not acted on",
            Code::InvalidValue => "invalid value",
            Code::UnknownKind => "unknown kind",
            Code::NoVirtualService => "no VirtualService",
            Code::RollbackLatched => "rollback latched",
            Code::InvalidCanarySpec => "invalid canary spec",
            Code::AdminState => "admin state",
            Code::ConfigTooLarge => "config over a parsing limit",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a finding points: a file (or another origin such as `admin API`), a 1-based line and
/// column, and the field path inside the document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    /// The file name, or the origin of a change that came from no file.
    pub file: Arc<str>,
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    /// The field path, e.g. `VirtualService/payment-svc: spec.http[1].route[1].weight`.
    pub path: String,
}

impl Location {
    /// A location with no line: an origin such as `admin API`.
    pub fn origin(file: impl Into<Arc<str>>, path: impl Into<String>) -> Self {
        Location {
            file: file.into(),
            line: 0,
            column: 0,
            path: path.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        Ok(())
    }
}

/// One thing the validator found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of finding this is.
    pub code: Code,
    /// Whether it refuses the config.
    pub severity: Severity,
    /// Where it is.
    pub location: Location,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Finding {
    /// An error finding.
    pub fn error(code: Code, location: Location, message: impl Into<String>) -> Self {
        Finding {
            code,
            severity: Severity::Error,
            location,
            message: message.into(),
        }
    }

    /// A warning finding.
    pub fn warning(code: Code, location: Location, message: impl Into<String>) -> Self {
        Finding {
            code,
            severity: Severity::Warning,
            location,
            message: message.into(),
        }
    }

    /// Whether this finding refuses the config.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}: {sev}[{}] {}: {}",
            self.location,
            self.code,
            self.code.title(),
            self.message
        )?;
        if !self.location.path.is_empty() {
            write!(f, "\n    at {}", self.location.path)?;
        }
        Ok(())
    }
}

/// Everything the validator found about one config, errors first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    /// Whether any finding refuses the config.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Finding::is_error)
    }

    /// The error findings.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter().filter(|f| f.is_error())
    }

    /// The warning findings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter().filter(|f| !f.is_error())
    }

    /// Whether a finding of this code is present.
    pub fn contains(&self, code: Code) -> bool {
        self.0.iter().any(|f| f.code == code)
    }

    /// Sort errors first, then by file, line and column; stable for equal keys.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.location.file.cmp(&b.location.file))
                .then_with(|| a.location.line.cmp(&b.location.line))
                .then_with(|| a.location.column.cmp(&b.location.column))
        });
    }
}

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.0 {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}
