//! Command-line arguments of the project's programs (`belink-eval`, `encoder-train`,
//! `rerank-tune`): `[COMMAND] [--flag value]... [positional]...`, a flag given twice keeping
//! both values.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub struct Args {
    pub command: Option<String>,
    pub flags: HashMap<String, Vec<String>>,
    pub positional: Vec<String>,
}

impl Args {
    /// `COMMAND [--flag value]... [positional]...`: the program's own arguments.
    pub fn from_env() -> Result<Args, String> {
        Args::parse(std::env::args().skip(1))
    }

    /// `COMMAND [--flag value]... [positional]...`.
    pub fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let command = words.next();
        Ok(Args { command, ..Args::parse_flags_and_positional(words)? })
    }

    /// `[--flag value]...`, for a program without commands or positional arguments.
    pub fn parse_flags(words: impl Iterator<Item = String>) -> Result<Args, String> {
        let args = Args::parse_flags_and_positional(words)?;
        match args.positional.first() {
            Some(word) => Err(format!("unexpected argument '{word}'")),
            None => Ok(args),
        }
    }

    fn parse_flags_and_positional(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut flags: HashMap<String, Vec<String>> = HashMap::new();
        let mut positional = Vec::new();
        while let Some(word) = words.next() {
            match word.strip_prefix("--") {
                Some(flag) => {
                    let value = words.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    flags.entry(flag.to_string()).or_default().push(value);
                }
                None => positional.push(word),
            }
        }
        Ok(Args { command: None, flags, positional })
    }

    /// The flag's value (the last one when it is repeated).
    pub fn get(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).and_then(|values| values.last()).map(String::as_str)
    }

    /// Every value of a flag that may be repeated.
    pub fn all(&self, flag: &str) -> &[String] {
        self.flags.get(flag).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every value of a flag given once per path.
    pub fn paths(&self, flag: &str) -> Vec<PathBuf> {
        self.all(flag).iter().map(PathBuf::from).collect()
    }

    pub fn required(&self, flag: &str) -> Result<&str, String> {
        self.get(flag).ok_or_else(|| format!("--{flag} is required"))
    }

    /// The flag's number, if given.
    pub fn optional_number(&self, flag: &str) -> Result<Option<f64>, String> {
        self.get(flag).map(|v| v.parse().map_err(|_| format!("--{flag}: not a number: '{v}'"))).transpose()
    }

    /// The flag's number, or `default` when the flag is absent.
    pub fn number(&self, flag: &str, default: f64) -> Result<f64, String> {
        Ok(self.optional_number(flag)?.unwrap_or(default))
    }

    /// `--max-minutes M` as a duration.
    pub fn max_time(&self) -> Result<Option<Duration>, String> {
        Ok(self.optional_number("max-minutes")?.map(|m| Duration::from_secs_f64(m * 60.0)))
    }

    /// A comma-separated list of positive numbers, or `default` when the flag is absent.
    pub fn list_of_numbers(&self, flag: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.get(flag) {
            None => Ok(default.to_vec()),
            Some(text) => text
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--{flag}: bad number '{n}'"))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    fn words(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|w| w.to_string()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn a_command_its_flags_and_positional_arguments() {
        let args = Args::parse(words(&["load", "--dsn", "host=/tmp", "hpo=/x/hp.obo", "--k", "1,10"])).unwrap();
        assert_eq!(args.command.as_deref(), Some("load"));
        assert_eq!(args.required("dsn").unwrap(), "host=/tmp");
        assert_eq!(args.positional, ["hpo=/x/hp.obo"]);
        assert_eq!(args.list_of_numbers("k", &[5]).unwrap(), [1, 10]);
        assert_eq!(args.list_of_numbers("missing", &[5]).unwrap(), [5]);
        assert!(args.required("corpus").is_err());
        let repeated = Args::parse(words(&["evaluate", "--dataset", "a", "--dataset", "b"])).unwrap();
        assert_eq!(repeated.all("dataset"), ["a", "b"]);
        assert_eq!(repeated.get("dataset"), Some("b"));
    }

    #[test]
    fn flags_only_with_numbers_and_paths() {
        let args = Args::parse_flags(words(&[
            "--examples",
            "a.jsonl",
            "--examples",
            "b.jsonl",
            "--lr",
            "5e-4",
            "--max-minutes",
            "1.5",
        ]))
        .unwrap();
        assert_eq!(args.paths("examples").len(), 2);
        assert_eq!(args.number("lr", 1.0).unwrap(), 5e-4);
        assert_eq!(args.number("rank", 16.0).unwrap(), 16.0);
        assert_eq!(args.max_time().unwrap().unwrap().as_secs(), 90);
        assert!(args.required("out").unwrap_err().contains("--out is required"));
        assert!(Args::parse_flags(words(&["--lr"])).err().unwrap().contains("needs a value"));
        assert!(Args::parse_flags(words(&["lr"])).err().unwrap().contains("unexpected argument"));
        let bad = Args::parse_flags(words(&["--lr", "fast"])).unwrap();
        assert!(bad.number("lr", 1.0).unwrap_err().contains("not a number"));
    }
}
