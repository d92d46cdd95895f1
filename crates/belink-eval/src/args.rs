//! Command-line arguments: `COMMAND [--flag value]... [positional]...`.

use std::collections::HashMap;

pub struct Args {
    pub command: Option<String>,
    pub flags: HashMap<String, String>,
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
                    flags.insert(flag.to_string(), words.next().unwrap_or_default());
                }
                None => positional.push(word),
            }
        }
        Args {
            command,
            flags,
            positional,
        }
    }

    pub fn required(&self, flag: &str) -> Result<&str, String> {
        self.flags
            .get(flag)
            .map(String::as_str)
            .ok_or_else(|| format!("--{flag} is required"))
    }

    /// A comma-separated list of positive numbers, or `default` when the flag is absent.
    pub fn list_of_numbers(&self, flag: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.flags.get(flag) {
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
        let words =
            ["load", "--dsn", "host=/tmp", "hpo=/x/hp.obo", "--k", "1,10"].map(String::from);
        let args = Args::parse(words.into_iter());
        assert_eq!(args.command.as_deref(), Some("load"));
        assert_eq!(args.required("dsn").unwrap(), "host=/tmp");
        assert_eq!(args.positional, ["hpo=/x/hp.obo"]);
        assert_eq!(args.list_of_numbers("k", &[5]).unwrap(), [1, 10]);
        assert_eq!(args.list_of_numbers("missing", &[5]).unwrap(), [5]);
        assert!(args.required("corpus").is_err());
    }
}
