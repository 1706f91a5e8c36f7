//! The app catalog: the `apps:` map of `config.yaml` in the seed's format (name → `daemon`,
//! `desc`, `path`, `default_args`, `help`, and skywire's own `args`, `capabilities` and `env`), and how
//! an entry's `path` becomes a program to run. It only describes apps; starting and watching
//! them is the supervisor's.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::capability::{Capability, CapabilitySet};
use crate::signal::{ENV_CLIENT, ENV_CLIENT_ID, ENV_SERVER_ADDRESS};

/// The longest app name accepted: names appear in commands, logs and replies.
pub const MAX_NAME_LEN: usize = 128;
/// The variables the launcher sets itself, which an entry's `env` may not.
pub const LAUNCHER_ENV: [&str; 3] = [ENV_CLIENT, ENV_CLIENT_ID, ENV_SERVER_ADDRESS];

/// One launchable app, as written under its name in `apps:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Restart the app with back-off whenever it exits on its own.
    #[serde(default, deserialize_with = "null_as_default")]
    pub daemon: bool,
    /// One line that `apps` shows beside the name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub desc: String,
    /// The program: relative to the config folder when it contains a `/`, looked up in `PATH`
    /// when it is a bare name, used as it is when absolute.
    pub path: String,
    /// Arguments used when `start` is given none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub default_args: Vec<String>,
    /// Whether `start` may give other arguments than `default_args`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Args,
    /// Longer help text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub help: String,
    /// The capabilities the app keeps (such as `CAP_NET_ADMIN`); it starts with none otherwise.
    #[serde(default, deserialize_with = "null_as_default")]
    pub capabilities: Vec<Capability>,
    /// Variables set in the app's environment, beside the signal variables and `PATH` (which
    /// this may replace); nothing of skywired's own environment reaches the app.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: BTreeMap<String, String>,
}

/// Which arguments `start` may give an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Args {
    /// Only its `default_args`: whoever may start the app cannot make it run anything else.
    #[default]
    Fixed,
    /// Any: whoever may start the app chooses its command line (`args: free`).
    Free,
}

impl AppSpec {
    /// Whether `start` may run the app with `args`: its `default_args`, or any when its entry
    /// says `args: free`.
    pub fn allows_args(&self, args: &[String]) -> bool {
        self.args == Args::Free || args == self.default_args.as_slice()
    }

    /// The capabilities the app keeps, as a set.
    pub fn capability_set(&self) -> CapabilitySet {
        self.capabilities.iter().copied().collect()
    }
}

/// The `apps:` map: app name → [`AppSpec`], in name order. A name given twice is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Catalog {
    apps: BTreeMap<String, AppSpec>,
}

impl<'de> Deserialize<'de> for Catalog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Catalog, D::Error> {
        struct CatalogVisitor;

        impl<'de> Visitor<'de> for CatalogVisitor {
            type Value = Catalog;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of app names to apps")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Catalog, A::Error> {
                let mut apps = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if apps.contains_key(&name) {
                        return Err(de::Error::custom(format!(
                            "app {name:?} is given twice: app names must be unique"
                        )));
                    }
                    let spec = map.next_value::<AppSpec>()?;
                    apps.insert(name, spec);
                }
                Ok(Catalog { apps })
            }
        }

        deserializer.deserialize_map(CatalogVisitor)
    }
}

/// Why a catalog or one of its entries cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The text is not a valid `apps:` map.
    #[error("bad app catalog: {0}; each app is `NAME:` followed by `path:` and optionally `daemon`, `desc`, `default_args`, `args`, `help`, `capabilities`, `env`")]
    Parse(String),
    /// An app name is empty, too long or has characters that commands cannot carry.
    #[error("bad app name {0:?}: use 1 to 128 letters, digits, `-`, `_` or `.`")]
    Name(String),
    /// An app's `path` is empty.
    #[error("app {0}: `path` is empty; give the program to run")]
    EmptyPath(String),
    /// A variable of an app's `env` cannot be set.
    #[error("app {app}: `env` cannot set {variable:?}: {problem}")]
    Env {
        /// The app's name.
        app: String,
        /// The variable's name.
        variable: String,
        /// What is wrong with it.
        problem: EnvProblem,
    },
}

/// What is wrong with a variable of an app's `env`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvProblem {
    /// The name is not letters, digits and `_`, or starts with a digit.
    #[error("a variable name is letters, digits and `_`, not starting with a digit")]
    Name,
    /// The value holds a NUL byte, which an environment cannot carry.
    #[error("its value holds a NUL byte")]
    Nul,
    /// The launcher sets it.
    #[error("skywired sets it for every app (the signal variables)")]
    Launcher,
}

/// Why an app's program cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// The catalog has no app of that name.
    #[error("no app named {0:?} in the catalog; `apps` lists them")]
    UnknownApp(String),
    /// A path (relative or absolute) names no file.
    #[error("app {app}: cannot start {path}: no such file{}", relative_hint(.base.as_deref()))]
    NotFound {
        /// The app's name.
        app: String,
        /// Its `path` as written.
        path: String,
        /// The config folder, when `path` is relative to it.
        base: Option<PathBuf>,
    },
    /// A bare program name is in no folder of `PATH`.
    #[error("app {app}: cannot start {path}: not found in any folder of PATH; write its full path in the catalog")]
    NotInPath {
        /// The app's name.
        app: String,
        /// Its `path` as written.
        path: String,
    },
    /// The file exists but cannot be executed.
    #[error("app {app}: cannot start {}: not an executable file; check its permissions (chmod +x)", .program.display())]
    NotExecutable {
        /// The app's name.
        app: String,
        /// The file found.
        program: PathBuf,
    },
}

/// Whether `name` can name an app: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_` or `.`.
pub fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `name` is a portable environment variable name: letters, digits and `_`, not
/// starting with a digit.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn relative_hint(base: Option<&Path>) -> String {
    match base {
        Some(base) => format!(
            " (path is relative to the config folder {})",
            base.display()
        ),
        None => String::new(),
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Catalog {
    /// A catalog of the given apps, checked as [`Catalog::check`] does.
    pub fn new(apps: BTreeMap<String, AppSpec>) -> Result<Catalog, CatalogError> {
        let catalog = Catalog { apps };
        catalog.check()?;
        Ok(catalog)
    }

    /// Parses the YAML of an `apps:` map (the value, not the `apps:` key) and checks it.
    pub fn from_yaml_str(text: &str) -> Result<Catalog, CatalogError> {
        let catalog: Option<Catalog> =
            yaml_serde::from_str(text).map_err(|err| CatalogError::Parse(err.to_string()))?;
        let catalog = catalog.unwrap_or_default();
        catalog.check()?;
        Ok(catalog)
    }

    /// Checks what serde cannot: names usable in commands and non-empty paths. Call it after
    /// deserializing a catalog embedded in a larger document.
    pub fn check(&self) -> Result<(), CatalogError> {
        for (name, spec) in &self.apps {
            if !is_app_name(name) {
                return Err(CatalogError::Name(name.clone()));
            }
            if spec.path.trim().is_empty() {
                return Err(CatalogError::EmptyPath(name.clone()));
            }
            for (variable, value) in &spec.env {
                let problem = if !is_variable_name(variable) {
                    Some(EnvProblem::Name)
                } else if LAUNCHER_ENV.contains(&variable.as_str()) {
                    Some(EnvProblem::Launcher)
                } else if value.contains('\0') {
                    Some(EnvProblem::Nul)
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(CatalogError::Env {
                        app: name.clone(),
                        variable: variable.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    /// The app of that name.
    pub fn get(&self, name: &str) -> Option<&AppSpec> {
        self.apps.get(name)
    }

    /// Every app, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AppSpec)> {
        self.apps.iter().map(|(name, spec)| (name.as_str(), spec))
    }

    /// How many apps.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The program file that app `name` runs, resolved as [`AppSpec::path`] says, with `base`
    /// the config folder, and checked to be an executable file.
    pub fn program(&self, name: &str, base: &Path) -> Result<PathBuf, ProgramError> {
        let spec = self
            .get(name)
            .ok_or_else(|| ProgramError::UnknownApp(name.to_owned()))?;
        resolve_program(name, &spec.path, base, std::env::var_os("PATH").as_deref())
    }
}

/// Resolves `path` as [`AppSpec::path`] says: `base` for a relative path with a `/`, the
/// folders of `search_path` for a bare name.
pub fn resolve_program(
    app: &str,
    path: &str,
    base: &Path,
    search_path: Option<&OsStr>,
) -> Result<PathBuf, ProgramError> {
    let written = Path::new(path);
    if !path.contains('/') {
        let found = search_path
            .into_iter()
            .flat_map(std::env::split_paths)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join(written))
            .find(|candidate| is_executable_file(candidate));
        return found.ok_or_else(|| ProgramError::NotInPath {
            app: app.to_owned(),
            path: path.to_owned(),
        });
    }
    let relative = written.is_relative();
    // `join` keeps an absolute path as it is.
    let program = base.join(written);
    match std::fs::metadata(&program) {
        Err(_) => Err(ProgramError::NotFound {
            app: app.to_owned(),
            path: path.to_owned(),
            base: relative.then(|| base.to_path_buf()),
        }),
        Ok(_) if !is_executable_file(&program) => Err(ProgramError::NotExecutable {
            app: app.to_owned(),
            program,
        }),
        Ok(_) => Ok(program),
    }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The seed's entry, exactly as written in its `config.yaml`.
    const SEED: &str = "\
apps:
  meshnet-socks-server:
    daemon: true
    desc: DESCRIPTION GOES HERE
    path: bin/meshnet/meshnet-run-socks-server
    default_args: []
    help: |
        [1] Text name of app, must be unique
";

    #[derive(Debug, Deserialize)]
    struct Config {
        apps: Catalog,
    }

    #[test]
    fn seed_entry_parses_as_written() {
        let config: Config = yaml_serde::from_str(SEED).unwrap();
        config.apps.check().unwrap();
        let spec = config.apps.get("meshnet-socks-server").unwrap();
        assert_eq!(
            spec,
            &AppSpec {
                daemon: true,
                desc: "DESCRIPTION GOES HERE".into(),
                path: "bin/meshnet/meshnet-run-socks-server".into(),
                default_args: vec![],
                args: Args::Fixed,
                help: "[1] Text name of app, must be unique\n".into(),
                capabilities: vec![],
                env: BTreeMap::new(),
            }
        );
        assert_eq!(config.apps.len(), 1);
    }

    #[test]
    fn only_path_is_required() {
        let catalog = Catalog::from_yaml_str("echo:\n  path: /bin/echo\n").unwrap();
        let spec = catalog.get("echo").unwrap();
        assert!(!spec.daemon);
        assert_eq!(spec.desc, "");
        assert!(spec.default_args.is_empty());
        let missing = Catalog::from_yaml_str("echo:\n  desc: no path\n").unwrap_err();
        assert!(missing.to_string().contains("path"), "{missing}");
    }

    #[test]
    fn only_default_args_unless_args_are_free() {
        let catalog = Catalog::from_yaml_str(
            "fixed:\n  path: x\n  default_args: [a, b]\nfree:\n  path: x\n  args: free\n",
        )
        .unwrap();
        let words = |list: &[&str]| list.iter().map(|word| word.to_string()).collect::<Vec<_>>();
        let fixed = catalog.get("fixed").unwrap();
        assert_eq!(fixed.args, Args::Fixed);
        assert!(fixed.allows_args(&words(&["a", "b"])));
        assert!(!fixed.allows_args(&words(&["a"])));
        assert!(!fixed.allows_args(&words(&["a", "b", "--config", "x.yaml"])));
        let free = catalog.get("free").unwrap();
        assert!(free.allows_args(&words(&["--config", "x.yaml"])));
        assert!(free.allows_args(&[]));
        let unknown = Catalog::from_yaml_str("a:\n  path: x\n  args: any\n").unwrap_err();
        assert!(unknown.to_string().contains("fixed"), "{unknown}");
    }

    #[test]
    fn empty_values_are_defaults() {
        let catalog =
            Catalog::from_yaml_str("a:\n  path: x/y\n  desc:\n  default_args:\n  help:\n").unwrap();
        assert_eq!(catalog.get("a").unwrap().desc, "");
        assert!(Catalog::from_yaml_str("").unwrap().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        let unknown = Catalog::from_yaml_str("a:\n  path: x\n  deamon: true\n").unwrap_err();
        assert!(unknown.to_string().contains("deamon"), "{unknown}");
        let name = Catalog::from_yaml_str("\"a b\":\n  path: x\n").unwrap_err();
        assert_eq!(name, CatalogError::Name("a b".into()));
        let empty = Catalog::from_yaml_str("a:\n  path: \"\"\n").unwrap_err();
        assert_eq!(empty, CatalogError::EmptyPath("a".into()));
    }

    #[test]
    fn capabilities_and_env_are_read_and_checked() {
        let catalog = Catalog::from_yaml_str(
            "vpn:\n  path: /bin/sh\n  capabilities: [CAP_NET_ADMIN]\n  \
             env: {PATH: /bin, MODE: fast}\n",
        )
        .unwrap();
        let spec = catalog.get("vpn").unwrap();
        assert_eq!(spec.capabilities, [Capability::NET_ADMIN]);
        assert!(spec.capability_set().contains(Capability::NET_ADMIN));
        assert_eq!(spec.env.get("MODE").map(String::as_str), Some("fast"));

        let unknown =
            Catalog::from_yaml_str("a:\n  path: x\n  capabilities: [NET_ADMIN]\n").unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("\"NET_ADMIN\" is not a Linux capability"),
            "{unknown}"
        );
        for (env, variable, problem) in [
            ("{\"1X\": y}", "1X", EnvProblem::Name),
            ("{\"A=B\": y}", "A=B", EnvProblem::Name),
            (
                "{SIGNAL_CLIENT_ID: \"9\"}",
                "SIGNAL_CLIENT_ID",
                EnvProblem::Launcher,
            ),
            ("{A: \"x\\0y\"}", "A", EnvProblem::Nul),
        ] {
            let err =
                Catalog::from_yaml_str(&format!("a:\n  path: x\n  env: {env}\n")).unwrap_err();
            assert_eq!(
                err,
                CatalogError::Env {
                    app: "a".into(),
                    variable: variable.into(),
                    problem
                },
                "{env}"
            );
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let duplicate = Catalog::from_yaml_str("a:\n  path: x\na:\n  path: y\n").unwrap_err();
        assert!(duplicate.to_string().contains("given twice"), "{duplicate}");
    }

    #[test]
    fn missing_relative_path_names_the_config_folder() {
        let config: Config = yaml_serde::from_str(SEED).unwrap();
        let base = Path::new("/nonexistent-skywire-config");
        let err = config
            .apps
            .program("meshnet-socks-server", base)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "app meshnet-socks-server: cannot start bin/meshnet/meshnet-run-socks-server: \
             no such file (path is relative to the config folder /nonexistent-skywire-config)"
        );
        let unknown = config.apps.program("nope", base).unwrap_err();
        assert_eq!(unknown, ProgramError::UnknownApp("nope".into()));
    }

    #[test]
    fn bare_names_are_looked_up_in_path() {
        let search = OsStr::new("/nonexistent-skywire-bin:/bin:/usr/bin");
        let found = resolve_program("sh", "sh", Path::new("/x"), Some(search)).unwrap();
        assert!(found.ends_with("sh"), "{}", found.display());
        let err = resolve_program(
            "nope",
            "no-such-program-here",
            Path::new("/x"),
            Some(search),
        )
        .unwrap_err();
        assert!(matches!(err, ProgramError::NotInPath { .. }));
    }

    #[test]
    fn absolute_and_non_executable_paths() {
        let found = resolve_program("sh", "/bin/sh", Path::new("/x"), None).unwrap();
        assert_eq!(found, Path::new("/bin/sh"));
        let err = resolve_program("pw", "/etc/passwd", Path::new("/x"), None).unwrap_err();
        assert!(err.to_string().contains("chmod +x"), "{err}");
        let err =
            resolve_program("gone", "/nonexistent-skywire/x", Path::new("/x"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app gone: cannot start /nonexistent-skywire/x: no such file"
        );
    }
}
