//! Command-line arguments: `COMMAND [--flag value]... [positional]...`.

use std::collections::HashMap;

pub struct Args {
    pub command: Option<String>,
    pub flags: HashMap<String, Vec<String>>,
    pub positional: Vec<String>,
}

impl Args {
    pub fn from_env() -> Args {
        Args::parse(std::env::args().skip(1))
    }

    pub fn parse(mut words: impl Iterator<Item = String>) -> Args {
        let command = words.next();
        let mut flags = HashMap::new();
        let mut positional = Vec::new();
        while let Some(word) = words.next() {
            match word.strip_prefix("--") {
                Some(flag) => {
                    flags.entry(flag.to_string()).or_insert_with(Vec::new).push(words.next().unwrap_or_default());
                }
                None => positional.push(word),
            }
        }
        Args { command, flags, positional }
    }

    /// The flag's value (the last one when it is repeated).
    pub fn get(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).and_then(|values| values.last()).map(String::as_str)
    }

    /// Every value of a flag that may be repeated.
    pub fn all(&self, flag: &str) -> &[String] {
        self.flags.get(flag).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn required(&self, flag: &str) -> Result<&str, String> {
        self.get(flag).ok_or_else(|| format!("--{flag} is required"))
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
    use super::*;

    #[test]
    fn flags_and_positional_arguments() {
        let words = ["load", "--dsn", "host=/tmp", "hpo=/x/hp.obo", "--k", "1,10"].map(String::from);
        let args = Args::parse(words.into_iter());
        assert_eq!(args.command.as_deref(), Some("load"));
        assert_eq!(args.required("dsn").unwrap(), "host=/tmp");
        assert_eq!(args.positional, ["hpo=/x/hp.obo"]);
        assert_eq!(args.list_of_numbers("k", &[5]).unwrap(), [1, 10]);
        assert_eq!(args.list_of_numbers("missing", &[5]).unwrap(), [5]);
        assert!(args.required("corpus").is_err());
        let repeated = Args::parse(["evaluate", "--dataset", "a", "--dataset", "b"].map(String::from).into_iter());
        assert_eq!(repeated.all("dataset"), ["a", "b"]);
        assert_eq!(repeated.get("dataset"), Some("b"));
    }
}
