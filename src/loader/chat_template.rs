//! Chat templates rendered the way Hugging Face's `apply_chat_template` renders them: Jinja with
//! trim_blocks and lstrip_blocks, Python string methods, `raise_exception`, and the variables
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// There is no fallback for a model without a template: guessing a format (ChatML, say) would
    /// answer in one the model was never trained on. Such a model takes raw prompts only.
    pub fn new(source: String, bos_token: Option<String>, eos_token: Option<String>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| -> String {
            // Templates use it for "today's date" in system prompts; a fixed UTC clock is enough.
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let days = (secs / 86_400) as i64;
            let (y, m, d) = civil_from_days(days);
            const MONTHS: [&str; 12] = [
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ];
            format
                .replace("%Y", &y.to_string())
                .replace("%m", &format!("{m:02}"))
                .replace("%d", &format!("{d:02}"))
                .replace("%B", MONTHS[(m - 1) as usize])
                .replace("%b", &MONTHS[(m - 1) as usize][..3])
        });
        env.add_template_owned("chat", source).map_err(|e| anyhow::anyhow!("chat template does not parse: {e}"))?;
        Ok(Self { env, bos_token: bos_token.unwrap_or_default(), eos_token: eos_token.unwrap_or_default() })
    }

    /// Renders the conversation. An error is the template's own complaint (for example
    /// "Conversation roles must alternate user/assistant"), meant for the client.
    pub fn render(&self, messages: &[TemplateMessage], add_generation_prompt: bool) -> Result<String, String> {
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => {
                    e.detail().unwrap_or("the chat template refused the messages").to_string()
                }
                _ => format!("chat template failed: {e}"),
            })
    }
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage { role: role.into(), content: content.into() }
    }

    /// SmolLM2's template, as its GGUF carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_adds_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2.into(), None, None).unwrap();
        let out = t.render(&[msg("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_reaches_the_caller_and_python_methods_work() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}{{ m['content'].strip() | upper }}{% endfor %}";
        let t = ChatTemplate::new(src.into(), Some("<s>".into()), None).unwrap();
        assert_eq!(t.render(&[msg("user", "  hi  ")], false).unwrap(), "<s>HI");
        assert_eq!(t.render(&[msg("tool", "x")], false).unwrap_err(), "no tools here");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_hugging_face() {
        let src = "{% for m in messages %}\n    {{ m.content }}\n{% endfor %}";
        let t = ChatTemplate::new(src.into(), None, None).unwrap();
        assert_eq!(t.render(&[msg("user", "a"), msg("user", "b")], false).unwrap(), "    a\n    b\n");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }
}
