//! Log file tailing (`[[tail]]`): not built yet.
