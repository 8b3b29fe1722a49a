"""The domain recommenders (plain nn.Modules): LightGCN, MF, NeuMF and SASRec over the shared tables."""
