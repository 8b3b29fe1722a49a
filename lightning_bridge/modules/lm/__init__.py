"""The language-model recommender (plain nn.Modules): backbones, ID tokens, prompts."""
