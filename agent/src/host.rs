//! Host and process metrics (`[host_metrics]`): not built yet.
