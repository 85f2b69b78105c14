#compdef unziplora

_unziplora_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _UNZIPLORA_COMPLETE=complete_zsh unziplora)
}

compdef _unziplora_completion unziplora
