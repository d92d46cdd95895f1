//! Command-line flags of the training programs (`encoder-train`, `rerank-tune`): `--name value`
//! pairs, a flag given twice keeping both values.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub struct Flags<'a>(HashMap<&'a str, Vec<&'a str>>);

impl<'a> Flags<'a> {
    pub fn parse(args: &'a [String]) -> Result<Flags<'a>, String> {
        let mut flags: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let flag = word.strip_prefix("--").ok_or_else(|| format!("unexpected argument '{word}'"))?;
            let value = words.next().ok_or_else(|| format!("--{flag} needs a value"))?;
            flags.entry(flag).or_default().push(value);
        }
        Ok(Flags(flags))
    }

    /// The flag's last value.
    pub fn one(&self, flag: &str) -> Option<&'a str> {
        self.0.get(flag).and_then(|v| v.last().copied())
    }

    pub fn required(&self, flag: &str) -> Result<&'a str, String> {
        self.one(flag).ok_or_else(|| format!("--{flag} is required"))
    }

    pub fn number(&self, flag: &str, default: f64) -> Result<f64, String> {
        self.one(flag).map_or(Ok(default), |v| v.parse().map_err(|_| format!("--{flag}: not a number: '{v}'")))
    }

    /// Every value of a flag given once per path.
    pub fn paths(&self, flag: &str) -> Vec<PathBuf> {
        self.0.get(flag).map(|v| v.iter().map(PathBuf::from).collect()).unwrap_or_default()
    }

    /// `--max-minutes M` as a duration.
    pub fn max_time(&self) -> Result<Option<Duration>, String> {
        Ok(self
            .one("max-minutes")
            .map(|_| self.number("max-minutes", 0.0))
            .transpose()?
            .map(|m| Duration::from_secs_f64(m * 60.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::Flags;

    #[test]
    fn flags_are_pairs_and_repeat() {
        let args: Vec<String> =
            ["--examples", "a.jsonl", "--examples", "b.jsonl", "--lr", "5e-4", "--max-minutes", "1.5"]
                .map(String::from)
                .into();
        let flags = Flags::parse(&args).unwrap();
        assert_eq!(flags.paths("examples").len(), 2);
        assert_eq!(flags.number("lr", 1.0).unwrap(), 5e-4);
        assert_eq!(flags.number("rank", 16.0).unwrap(), 16.0);
        assert_eq!(flags.max_time().unwrap().unwrap().as_secs(), 90);
        assert!(flags.required("out").unwrap_err().contains("--out is required"));
        assert!(Flags::parse(&["--lr".to_string()]).err().unwrap().contains("needs a value"));
        assert!(Flags::parse(&["lr".to_string()]).err().unwrap().contains("unexpected argument"));
        let bad: Vec<String> = ["--lr", "fast"].map(String::from).into();
        assert!(Flags::parse(&bad).unwrap().number("lr", 1.0).unwrap_err().contains("not a number"));
    }
}
