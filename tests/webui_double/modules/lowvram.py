def is_enabled(sd_model):
    return sd_model.lowvram
