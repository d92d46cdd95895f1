//! Annotated corpora for evaluation and instruction-tuning data: PubTator (NCBI-disease,
//! BC5CDR...) and the GSC+ TSV format (HPO).
//!
//! Offsets are 0-based character offsets into [`Document::text`], end exclusive; every parser
//! checks that each annotation's offsets select its mention text.

use std::path::Path;

use belink_core::input::{clip, open_file, Lines, ReadError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: String,
    /// PubTator: title, a space, abstract (the offsets' convention).
    pub text: String,
    pub mentions: Vec<GoldMention>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldMention {
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The corpus' entity type (`SpecificDisease`, `CompositeMention`...), if it has one.
    pub entity_type: Option<String>,
    /// The annotation's concept field as written, e.g. `D001943|D010051` or `D007153+D040181`.
    pub concept_field: String,
}

impl GoldMention {
    /// The ids in the concept field. `|` separates the concepts of a composite mention
    /// ("breast and ovarian cancer"), `+` the parts of a concept expressed as a combination.
    pub fn concept_ids(&self) -> Vec<&str> {
        self.concept_field.split(['|', '+', ',']).map(str::trim).filter(|id| !id.is_empty() && *id != "-1").collect()
    }

    /// True when the corpus says no concept applies (NIL): an empty field or `-1`.
    pub fn is_nil(&self) -> bool {
        self.concept_ids().is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpusFormat {
    PubTator,
    GscPlus,
}

/// Reads a corpus file (plain or gzip), detecting PubTator or GSC+ from its content.
pub fn load_corpus(path: &Path) -> Result<Vec<Document>> {
    let mut lines = Lines::new(open_file(path)?);
    let head = lines.peek_lines(4)?;
    let first = head.iter().find(|l| !l.trim().is_empty()).map(String::as_str).unwrap_or("");
    let format = if first.contains("|t|") || first.contains("|a|") {
        CorpusFormat::PubTator
    } else if !first.is_empty() && first.trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        CorpusFormat::GscPlus
    } else {
        return Err(ReadError::Invalid(
            "cannot detect the corpus format: expected PubTator (`ID|t|title`) or GSC+ (a document id line)".into(),
        ));
    };
    parse_corpus(format, &mut lines)
}

pub fn parse_corpus(format: CorpusFormat, lines: &mut Lines) -> Result<Vec<Document>> {
    let documents = match format {
        CorpusFormat::PubTator => parse_pubtator(lines)?,
        CorpusFormat::GscPlus => parse_gscplus(lines)?,
    };
    if documents.is_empty() {
        return Err(ReadError::Invalid("no documents found".into()));
    }
    Ok(documents)
}

/// Builds documents from lines, checking each annotation against the text.
#[derive(Default)]
struct DocumentBuilder {
    documents: Vec<Document>,
    current: Option<(Document, Vec<char>)>,
}

impl DocumentBuilder {
    fn start(&mut self, id: &str, text: String) {
        self.finish();
        let chars = text.chars().collect();
        self.current = Some((Document { id: id.to_string(), text, mentions: Vec::new() }, chars));
    }

    fn append_text(&mut self, id: &str, text: &str, line: usize) -> Result<()> {
        match &mut self.current {
            Some((document, chars)) if document.id == id => {
                document.text.push(' ');
                document.text.push_str(text);
                *chars = document.text.chars().collect();
                Ok(())
            }
            _ => Err(ReadError::syntax(line, format!("abstract of document {id} without its title line"))),
        }
    }

    fn annotate(
        &mut self,
        id: &str,
        fields: &[&str],
        entity_type: Option<&str>,
        concepts: &str,
        line: usize,
    ) -> Result<()> {
        let Some((document, chars)) = &mut self.current else {
            return Err(ReadError::syntax(line, "annotation before any document text"));
        };
        if document.id != id {
            return Err(ReadError::syntax(
                line,
                format!("annotation of document {id} inside document {}", document.id),
            ));
        }
        let offset = |field: &str| {
            field
                .trim()
                .parse::<usize>()
                .map_err(|_| ReadError::syntax(line, format!("offset '{}' is not a number", clip(field))))
        };
        let (start, end) = (offset(fields[0])?, offset(fields[1])?);
        let text = fields[2];
        if start >= end || end > chars.len() {
            return Err(ReadError::syntax(
                line,
                format!("offsets {start}-{end} are outside document {id} ({} characters)", chars.len()),
            ));
        }
        let spanned: String = chars[start..end].iter().collect();
        // Some annotations carry stray spaces after the mention (NCBI-disease train): the
        // offsets are what counts.
        if spanned.trim() != text.trim() {
            return Err(ReadError::syntax(
                line,
                format!("offsets {start}-{end} select '{}', not the mention '{}'", clip(&spanned), clip(text)),
            ));
        }
        document.mentions.push(GoldMention {
            start,
            end,
            text: spanned,
            entity_type: entity_type.map(String::from),
            concept_field: concepts.trim().to_string(),
        });
        Ok(())
    }

    fn finish(&mut self) {
        if let Some((document, _)) = self.current.take() {
            self.documents.push(document);
        }
    }

    fn into_documents(mut self) -> Vec<Document> {
        self.finish();
        self.documents
    }
}

/// PubTator: `ID|t|title`, `ID|a|abstract`, then `ID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>concepts`
/// lines; documents separated by blank lines. Offsets count title + one space + abstract.
pub fn parse_pubtator(lines: &mut Lines) -> Result<Vec<Document>> {
    let mut builder = DocumentBuilder::default();
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.trim().is_empty() {
            continue;
        }
        if let Some((id, title)) = split_text_line(&line, "|t|") {
            builder.start(id, title.to_string());
        } else if let Some((id, abstract_text)) = split_text_line(&line, "|a|") {
            builder.append_text(id, abstract_text, number)?;
        } else {
            let fields: Vec<&str> = line.split('\t').collect();
            if !(5..=7).contains(&fields.len()) {
                return Err(ReadError::syntax(
                    number,
                    format!(
                        "expected 'ID|t|title', 'ID|a|abstract' or a tab-separated annotation (ID, start, end, mention, type, concepts), found '{}'",
                        clip(&line)
                    ),
                ));
            }
            let concepts = fields.get(5).copied().unwrap_or("");
            builder.annotate(fields[0], &fields[1..4], Some(fields[4]), concepts, number)?;
        }
    }
    Ok(builder.into_documents())
}

fn split_text_line<'a>(line: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let (id, text) = line.split_once(marker)?;
    (!id.is_empty() && !id.contains('\t')).then_some((id, text))
}

/// GSC+ (PhenoTagger's release): a document id line, a text line, then
/// `start<TAB>end<TAB>mention<TAB>HP:id` lines; documents separated by blank lines.
pub fn parse_gscplus(lines: &mut Lines) -> Result<Vec<Document>> {
    let mut builder = DocumentBuilder::default();
    let mut expecting = Expect::Id;
    let mut id = String::new();
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.trim().is_empty() {
            expecting = Expect::Id;
            continue;
        }
        match expecting {
            Expect::Id => {
                id = line.trim().to_string();
                expecting = Expect::Text;
            }
            Expect::Text => {
                builder.start(&id, line);
                expecting = Expect::Annotation;
            }
            Expect::Annotation => {
                let fields: Vec<&str> = line.split('\t').collect();
                if fields.len() != 4 {
                    return Err(ReadError::syntax(
                        number,
                        format!("expected 'start<TAB>end<TAB>mention<TAB>concept', found '{}'", clip(&line)),
                    ));
                }
                builder.annotate(&id, &fields[..3], None, fields[3], number)?;
            }
        }
    }
    Ok(builder.into_documents())
}

#[derive(Clone, Copy)]
enum Expect {
    Id,
    Text,
    Annotation,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Lines {
        Lines::new(Box::new(std::io::Cursor::new(text.as_bytes().to_vec())))
    }

    const PUBTATOR: &str = "\
9050866|t|The ataxia-telangiectasia gene product.
9050866|a|Breast and ovarian cancer in ATM carriers.
9050866\t4\t25\tataxia-telangiectasia\tModifier\tD001260
9050866\t40\t65\tBreast and ovarian cancer\tCompositeMention\tD001943|D010051

8808605|t|Severe G6PD deficiency.
8808605|a|
8808605\t7\t22\tG6PD deficiency\tSpecificDisease\tD005955
";

    #[test]
    fn pubtator_documents_and_mentions() {
        let documents = parse_pubtator(&mut lines(PUBTATOR)).unwrap();
        assert_eq!(documents.len(), 2);
        let first = &documents[0];
        assert_eq!(first.text, "The ataxia-telangiectasia gene product. Breast and ovarian cancer in ATM carriers.");
        assert_eq!(first.mentions.len(), 2);
        let composite = &first.mentions[1];
        assert_eq!(composite.entity_type.as_deref(), Some("CompositeMention"));
        assert_eq!(composite.concept_ids(), ["D001943", "D010051"]);
        assert_eq!(documents[1].mentions[0].concept_ids(), ["D005955"]);
    }

    #[test]
    fn pubtator_offsets_are_checked() {
        let bad = PUBTATOR.replace("9050866\t4\t25", "9050866\t5\t25");
        let error = parse_pubtator(&mut lines(&bad)).unwrap_err();
        assert!(error.to_string().contains("line 3: offsets 5-25 select"), "{error}");
        let outside = PUBTATOR.replace("\t40\t65\t", "\t40\t650\t");
        assert!(parse_pubtator(&mut lines(&outside)).unwrap_err().to_string().contains("outside document"));
        let garbage = format!("{PUBTATOR}not an annotation\n");
        assert!(parse_pubtator(&mut lines(&garbage)).unwrap_err().to_string().contains("line 9: expected"));
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        let text = "1|t|Sjögren’s syndrome and β-thalassemia\n1\t23\t36\tβ-thalassemia\tSpecificDisease\tD017086\n";
        let documents = parse_pubtator(&mut lines(text)).unwrap();
        assert_eq!(documents[0].mentions[0].text, "β-thalassemia");
    }

    #[test]
    fn nil_and_combined_concepts() {
        let mention = |field: &str| GoldMention {
            start: 0,
            end: 1,
            text: "x".into(),
            entity_type: None,
            concept_field: field.into(),
        };
        assert!(mention("-1").is_nil());
        assert!(mention("").is_nil());
        assert_eq!(mention("D007153+D040181").concept_ids(), ["D007153", "D040181"]);
        assert_eq!(mention("OMIM:607374").concept_ids(), ["OMIM:607374"]);
    }

    #[test]
    fn gscplus_documents() {
        let text = "11312426\nNevoid basal cell carcinoma syndrome (NBCCS) is rare.\n7\t27\tbasal cell carcinoma\tHP:0002671\n\n42\nNo findings.\n";
        let documents = parse_gscplus(&mut lines(text)).unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[0].mentions[0].concept_ids(), ["HP:0002671"]);
        assert!(documents[1].mentions.is_empty());
        let bad = text.replace("7\t27\tbasal", "7\t27\tbasal\textra");
        assert!(parse_gscplus(&mut lines(&bad)).unwrap_err().to_string().contains("line 3"));
    }

    #[test]
    fn real_excerpts_load_with_format_detection() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let ncbi = load_corpus(&fixtures.join("ncbi_dev_excerpt.txt")).unwrap();
        assert_eq!(ncbi.len(), 3);
        assert!(ncbi.iter().all(|d| !d.mentions.is_empty()));
        let gsc = load_corpus(&fixtures.join("gscplus_dev_excerpt.tsv")).unwrap();
        assert_eq!(gsc.len(), 2);
        assert_eq!(gsc[0].id, "11312426");
    }

    /// The full development sets, when ../shared/data is there (it is not part of the repository).
    #[test]
    fn the_shared_corpora_parse_when_present() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        let dev = data.join("ncbi-disease/NCBIdevelopset_corpus.txt");
        if dev.exists() {
            let documents = load_corpus(&dev).unwrap();
            assert_eq!(documents.len(), 100);
            assert_eq!(documents.iter().map(|d| d.mentions.len()).sum::<usize>(), 787);
        }
        let gsc = data.join("gscplus/GSCplus_dev_gold.tsv");
        if gsc.exists() {
            let documents = load_corpus(&gsc).unwrap();
            assert_eq!(documents.iter().map(|d| d.mentions.len()).sum::<usize>(), 173);
        }
    }

    #[test]
    fn mutated_corpora_never_panic_the_parsers() {
        let mut random = fastrand::Rng::with_seed(0x5eed);
        for name in ["ncbi_dev_excerpt.txt", "gscplus_dev_excerpt.tsv"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name);
            let original = std::fs::read(path).unwrap();
            for _ in 0..500 {
                let mut data = original.clone();
                let at = random.usize(..data.len());
                match random.usize(..3) {
                    0 => data[at] ^= 1 << random.usize(..8),
                    1 => data.truncate(at),
                    _ => data.insert(at, [b'\t', b'|', b'\n', 0xff][random.usize(..4)]),
                }
                for format in [CorpusFormat::PubTator, CorpusFormat::GscPlus] {
                    let _ = parse_corpus(format, &mut Lines::new(Box::new(std::io::Cursor::new(data.clone()))));
                }
            }
        }
    }
}
