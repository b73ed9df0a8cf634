//! The endpoints a proxy serves; each family decides which it can reach and where.

/// An upstream operation; each deployment has its own URL for each one its family serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Embeddings,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API.
    Messages,
    /// Gemini's `generateContent` and `streamGenerateContent`.
    GenerateContent,
    StreamGenerateContent,
}

impl Operation {
    pub const ALL: [Self; 6] = [
        Self::ChatCompletions,
        Self::Embeddings,
        Self::Responses,
        Self::Messages,
        Self::GenerateContent,
        Self::StreamGenerateContent,
    ];

    /// The endpoint's path as a client calls it, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::GenerateContent => "models/{model}:generateContent",
            Self::StreamGenerateContent => "models/{model}:streamGenerateContent",
        }
    }

    pub fn is_gemini(self) -> bool {
        matches!(self, Self::GenerateContent | Self::StreamGenerateContent)
    }

    /// Whether the request body names the model (Gemini's paths carry it instead).
    pub fn model_in_body(self) -> bool {
        !self.is_gemini()
    }

    /// Its slot in a deployment's URL table.
    pub fn index(self) -> usize {
        self as usize
    }

    /// `http.route`: the path as routed, Gemini's model in braces.
    pub fn route(self) -> &'static str {
        match self {
            Self::GenerateContent => "/v1beta/models/{model}:generateContent",
            Self::StreamGenerateContent => "/v1beta/models/{model}:streamGenerateContent",
            other => other.path(),
        }
    }

    /// What it is on the GenAI semantic conventions.
    pub fn gen_ai(self) -> GenAiOperation {
        match self {
            Self::ChatCompletions | Self::Responses | Self::Messages => GenAiOperation::Chat,
            Self::Embeddings => GenAiOperation::Embeddings,
            Self::GenerateContent | Self::StreamGenerateContent => GenAiOperation::GenerateContent,
        }
    }
}

/// `gen_ai.operation.name`: the conventions' well-known values for what the endpoints do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenAiOperation {
    Chat,
    Embeddings,
    GenerateContent,
}

impl GenAiOperation {
    pub const ALL: [Self; 3] = [Self::Chat, Self::Embeddings, Self::GenerateContent];

    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::GenerateContent => "generate_content",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
