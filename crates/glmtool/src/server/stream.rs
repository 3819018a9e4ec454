//! Replies as they stream: stop sequences, the content that is certain so far (built on the
//! runtime's reply parsers), tool calls, and the SSE driver.

use super::*;

// ---------------------------------------------------------------- replies

/// The final content and tool calls of a chat reply: text segments (and calls that do not
/// parse, as their text) joined by newlines; parsed calls become `tool_calls`.
pub(crate) fn final_reply(text: &str, tools: bool, format: ChatFormat) -> (String, Vec<ToolCall>) {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    let segments = parse_reply_as(format, text, tools);
    for seg in segments {
        match seg {
            Segment::Text(c) => parts.push(c),
            Segment::ToolCall(c) => calls.push(c),
            Segment::Code { content, .. } => parts.push(content.trim().to_string()),
            Segment::Other {
                metadata,
                content,
                error,
            } => {
                if let Some(e) = error {
                    eprintln!("warning: reply with metadata {metadata:?} returned as text: {e}");
                }
                parts.push(content.trim().to_string())
            }
        }
    }
    parts.retain(|p| !p.is_empty());
    (parts.join("\n"), calls)
}

/// The part of a growing reply that is certain to be the start of `final_reply`'s content:
/// text segments so far, up to the first segment that may be a tool call, without a tail that
/// may become a stop sequence or trailing whitespace.
pub(crate) fn stable_content(
    text: &str,
    tools: bool,
    format: ChatFormat,
    stops: &[String],
) -> String {
    let mut t = &text[..safe_len(text, stops)];
    if matches!(format, ChatFormat::Chatglm2 | ChatFormat::Completion) {
        // no metadata line: the text so far, without whitespace that may end the reply
        return t.trim().to_string();
    }
    // A tail that may still become `<|assistant|>` (the model can write it as plain text too).
    const SEP: &str = "<|assistant|>";
    if let Some(k) = (1..SEP.len()).rev().find(|&k| t.ends_with(&SEP[..k])) {
        t = &t[..t.len() - k];
    }
    // the runtime's splitter (`split_segment`, as `parse_reply` uses it) on the complete parts
    let segments: Vec<&str> = t.split(SEP).collect();
    let mut parts: Vec<String> = Vec::new();
    for (k, part) in segments.iter().enumerate() {
        if part.trim().is_empty() {
            continue;
        }
        if k + 1 == segments.len() && !part.contains('\n') {
            break; // the metadata line is not complete yet
        }
        let (meta, content) = split_segment(part);
        if !meta.is_empty() && tools && meta != glm_runtime::agent::INTERPRETER {
            break; // a tool call: held back until the end
        }
        parts.push(content.trim().to_string());
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n")
}

/// OpenAI's `tool_calls` array.
pub(crate) fn tool_calls_out(calls: &[ToolCall], streaming: bool) -> Vec<wire::ToolCallOut> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| wire::ToolCallOut {
            index: streaming.then_some(i),
            id: Some(format!("call_{}", random_hex(12))),
            kind: Some("function"),
            function: wire::FunctionOut {
                name: Some(c.name.clone()),
                arguments: serde_json::to_string(&c.arguments).unwrap_or_default(),
            },
        })
        .collect()
}

/// GLM-4's first tool call while it streams: its name once the metadata line is complete, and
/// its arguments so far (JSON text, as the model writes it), without a tail that may still
/// become a stop sequence or `<|assistant|>`.
pub(crate) fn streaming_call<'t>(text: &'t str, stops: &[String]) -> Option<(&'t str, &'t str)> {
    let mut t = &text[..safe_len(text, stops)];
    const SEP: &str = "<|assistant|>";
    if let Some(k) = (1..SEP.len()).rev().find(|&k| t.ends_with(&SEP[..k])) {
        t = &t[..t.len() - k];
    }
    for part in t.split(SEP) {
        if part.trim().is_empty() {
            continue;
        }
        let (meta, args) = part.split_once('\n')?;
        if !meta.trim().is_empty() {
            return Some((meta.trim(), args));
        }
    }
    None
}

pub(crate) fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap_or('0'))
        .collect()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One choice of a stream (`n` choices stream side by side, their chunks told apart by
/// `index`).
#[derive(Default)]
pub(crate) struct ChoiceStream {
    /// The reply so far.
    pub(crate) text: String,
    /// What of it went out as content.
    pub(crate) sent: String,
    /// GLM-4: the name of the tool call that was streamed, and how many bytes of its
    /// arguments were.
    pub(crate) call: Option<(String, usize)>,
    /// Log-probabilities of tokens not yet attached to a chunk.
    pub(crate) logprobs: Vec<wire::TokenLogprob>,
    /// Its counts, once it ended.
    stats: Option<GenerateStats>,
}

pub(crate) struct StreamState {
    /// Every choice's events, tagged with the choice's index.
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
    pub(crate) out: VecDeque<String>,
    pub(crate) done: bool,
    pub(crate) choices: Vec<ChoiceStream>,
}

impl StreamState {
    /// The stream of a request's choices, in choice order: their events are merged by a task
    /// each, which stops as soon as the client has gone (the stream dropped), dropping the
    /// job's channel: the worker cancels the job at its next step, also one still waiting for
    /// a slot.
    pub(crate) fn new(rxs: Vec<mpsc::UnboundedReceiver<Event>>, out: VecDeque<String>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let n = rxs.len();
        for (index, mut choice) in rxs.into_iter().enumerate() {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        event = choice.recv() => {
                            let Some(event) = event else { break };
                            if tx.send((index, event)).is_err() {
                                break;
                            }
                        }
                        _ = tx.closed() => break,
                    }
                }
            });
        }
        StreamState {
            rx,
            out,
            done: false,
            choices: (0..n).map(|_| ChoiceStream::default()).collect(),
        }
    }

    /// Records that choice `index` ended; once every choice has, the request's counts (as
    /// [`collect_choices`] adds them up).
    pub(crate) fn end_choice(
        &mut self,
        index: usize,
        stats: GenerateStats,
    ) -> Option<GenerateStats> {
        self.choices[index].stats = Some(stats);
        let ended: Option<Vec<&GenerateStats>> =
            self.choices.iter().map(|c| c.stats.as_ref()).collect();
        ended.map(request_stats)
    }

    /// Ends the stream with an error event (generation failed after the headers were sent).
    fn fail(&mut self, message: &str) {
        self.out
            .push_back(json!({"error": {"message": message, "type": "server_error"}}).to_string());
        self.out.push_back("[DONE]".into());
        self.done = true;
    }
}

/// An SSE response: sends the lines `on_event` queues for each generation event of each
/// choice (with its index), until it (or a failure) marks the stream done or every generation
/// ends. `on_event` sees every event but `Failed`, which ends the stream with an error event.
pub(crate) fn sse_stream(
    state: StreamState,
    on_event: impl FnMut(&mut StreamState, usize, Event) + Send + 'static,
) -> Response {
    let stream =
        futures_util::stream::unfold((state, on_event), |(mut st, mut on_event)| async move {
            loop {
                if let Some(line) = st.out.pop_front() {
                    let event = SseEvent::default().data(line);
                    return Some((Ok::<_, std::convert::Infallible>(event), (st, on_event)));
                }
                if st.done {
                    return None;
                }
                match st.rx.recv().await {
                    Some((_, Event::Failed(m))) => st.fail(&m),
                    Some((index, event)) => on_event(&mut st, index, event),
                    None => return None,
                }
            }
        });
    // a comment line every 15 s while nothing else goes out (a long prompt on a CPU), so
    // proxies and clients do not drop the connection as idle
    Sse::new(stream)
        .keep_alive(
            axum::response::sse::KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_answers_503_with_retry_after() {
        assert!(queue_room(0, 16).is_ok() && queue_room(15, 16).is_ok());
        let e = queue_room(16, 16).unwrap_err();
        assert_eq!(e.0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.1.contains("--max-queue 16"), "{}", e.1);
        let r = e.into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert!(
            queue_room(0, 0).is_err(),
            "--max-queue 0: only the running request"
        );
    }

    #[test]
    fn stop_sequences_hold_back_their_prefixes() {
        let stops = vec!["END".to_string(), "。".to_string()];
        assert_eq!(safe_len("abc EN", &stops), 4);
        assert_eq!(safe_len("abc END more", &stops), 4);
        assert_eq!(safe_len("abc E", &stops), 4);
        assert_eq!(safe_len("abc", &stops), 3);
        assert_eq!(first_stop("好。END", &stops), Some(3));
        assert_eq!(first_stop("x", &[String::new()]), None);
    }

    #[test]
    fn chatglm2_replies_have_no_metadata_line() {
        let (content, calls) = final_reply("Hello\nWorld\n", false, ChatFormat::Chatglm2);
        assert_eq!((content.as_str(), calls.len()), ("Hello\nWorld", 0));
        assert_eq!(
            stable_content("Hello\nWo", false, ChatFormat::Chatglm2, &[]),
            "Hello\nWo"
        );
        assert_eq!(
            stable_content(" Hi \n", false, ChatFormat::Completion, &[]),
            "Hi"
        );
    }

    #[test]
    fn glm4_calls_stream_name_then_arguments() {
        let full = "get_weather\n{\"city\": \"北京\"}";
        let mut args_seen = String::new();
        let mut name_at = None;
        for end in 1..=full.len() {
            if !full.is_char_boundary(end) {
                continue;
            }
            if let Some((name, args)) = streaming_call(&full[..end], &[]) {
                assert_eq!(name, "get_weather");
                name_at.get_or_insert(end);
                assert!(args.starts_with(&args_seen), "{args:?} after {args_seen:?}");
                args_seen = args.to_string();
            }
        }
        assert_eq!(name_at, Some("get_weather\n".len()));
        assert_eq!(args_seen, "{\"city\": \"北京\"}");
        // a plain answer is no call; a half-written "<|assistant|>" is held back
        assert!(streaming_call("\nHello", &[]).is_none());
        assert_eq!(streaming_call("f\n{}<|assis", &[]), Some(("f", "{}")));
    }

    #[test]
    fn glm4_tool_calls_are_json_arguments() {
        let (content, calls) = final_reply(
            "\nLet me check.<|assistant|>get_weather\n{\"city\": \"北京\"}",
            true,
            ChatFormat::Glm4,
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments["city"], "北京");
        assert_eq!(calls[0].to_message().content, "{\"city\": \"北京\"}");
        // not JSON: returned as text
        let (content, calls) = final_reply("f\nnot json", true, ChatFormat::Glm4);
        assert!(calls.is_empty());
        assert_eq!(content, "not json");
    }

    #[test]
    fn streamed_content_is_a_prefix_of_the_final_reply() {
        let replies = [
            ("\n Hello world.  \n", false),
            (
                "\n 我来算。<|assistant|>interpreter\n```python\nprint(1)\n```",
                false,
            ),
            (
                "\nLet me check.<|assistant|>get_weather\n```python\ntool_call(city='x')\n```",
                true,
            ),
            ("get_weather\n```python\ntool_call(city=x)\n```", true),
            ("no newline at all", true),
        ];
        for (text, tools) in replies {
            let (content, _) = final_reply(text, tools, ChatFormat::Chatglm3);
            let mut sent = String::new();
            for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                let stable = stable_content(&text[..end], tools, ChatFormat::Chatglm3, &[]);
                assert!(
                    stable.starts_with(&sent),
                    "{text:?}@{end}: {stable:?} after {sent:?}"
                );
                assert!(
                    content.starts_with(&stable),
                    "{text:?}@{end}: {stable:?} vs {content:?}"
                );
                sent = stable;
            }
        }
        let (content, calls) = final_reply(
            "\nLet me check.<|assistant|>get_weather\n```python\ntool_call(city='北京')\n```",
            true,
            ChatFormat::Chatglm3,
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 1);
        let j = serde_json::to_value(tool_calls_out(&calls, false)).unwrap();
        assert!(j[0].get("index").is_none());
        assert_eq!(j[0]["function"]["name"], "get_weather");
        assert_eq!(j[0]["function"]["arguments"], "{\"city\":\"北京\"}");
        assert!(j[0]["id"].as_str().unwrap().starts_with("call_"));
        // A malformed call comes back as text.
        let (content, calls) = final_reply(
            "get_weather\ntool_call(city=北京)",
            true,
            ChatFormat::Chatglm3,
        );
        assert_eq!((content.as_str(), calls.len()), ("tool_call(city=北京)", 0));
    }
}
