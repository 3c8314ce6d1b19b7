"""Built-in cells, one file per family: rnn, lstm (all variants), gru."""
