#compdef unzip

_unzip_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _UNZIP_COMPLETE=complete_zsh unzip)
}

compdef _unzip_completion unzip
